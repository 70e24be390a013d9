"""End-to-end tests (a package, so that this conftest does not shadow tests/labeler/conftest.py as module `conftest`)."""
