"""End-to-end fixtures: a real `labeler serve` subprocess on a free port and a fresh database (a SQLite
file, and a PostgreSQL database when LABELER_TEST_POSTGRES_URL is set: tests/conftest.py's `backend`),
and Debian's chromium driven by Playwright for Python.

Data is seeded with the labeler's own Python functions straight into the database the server uses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from labeler.accounts import create_user
from labeler.db import Database
from labeler.importer import import_tasks
from labeler.projects import create_project

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "e2e-password"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(new_database) -> str:
    return new_database()


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def seed(db):
    """seed(users=[(name, role)], project=dict(name=..., k=..., ...), tasks=[...]): writes into the server's database."""
    database = db

    def run(users=(), project=None, tasks=()):
        with database.write() as s:
            for username, role in users:
                create_user(s, username, PASSWORD, role=role)
            if project:
                p = create_project(s, **project)
                import_tasks(s, p, list(tasks), source="e2e")

    return run


@pytest.fixture
def server(db_url, serve_labeler):
    """`labeler serve --db URL --port N` as a real subprocess; yields its base URL."""
    return serve_labeler(db_url, secret_key="e2e-secret-key")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get update && apt-get install -y chromium` (make setup does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


@pytest.fixture
def login():
    return log_in


@pytest.fixture
def keep_screenshot():
    """keep_screenshot(png): copies it to docs/annotate.png, but only when UPDATE_SCREENSHOT=1, so that
    `make test` leaves the working tree clean."""

    def keep(png: Path) -> None:
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            target = REPO_ROOT / "docs" / "annotate.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)

    return keep
