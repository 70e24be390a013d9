"""Fixtures for the labeler tests: a migrated database per test, run on each backend (a SQLite FILE, since
WAL needs one, and a fresh PostgreSQL database when LABELER_TEST_POSTGRES_URL is set), the app on it,
a Flask client, a click runner, a real `labeler serve` subprocess (`live_server`), and helpers to make
users, tokens, projects and tasks quickly.

`db_url`, `db`, `app` and `live_server` all point at the same file within one test, so a test can
seed data with `make_user`/`make_project` and then drive the real server.
"""

from __future__ import annotations


import pytest
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from labeler.accounts import create_token
from labeler.app import create_app
from labeler.db import Database, get_db
from labeler.importer import import_tasks
from labeler.models import User
from labeler.projects import create_project

PASSWORD = "correct horse"
# scrypt (the real default) costs ~50 ms per user; tests that make many users use this cheap hash
FAST_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
SECRET_KEY = "test-secret-key-not-for-production"


@pytest.fixture
def db_url(new_database) -> str:
    return new_database()


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def app(db_url, tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": db_url, "SECRET_KEY": SECRET_KEY, "EXPORT_DIR": str(tmp_path / "exports")})
    yield app
    get_db(app).dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def make_user(db):
    """make_user(name, role="annotator") -> User (detached; password is conftest.PASSWORD)."""

    def make(username: str, role: str = "annotator", simulated: bool = False) -> User:
        with db.write() as session:
            user = User(username=username, password_hash=FAST_HASH, role=role, active=True, simulated=simulated)
            session.add(user)
            session.flush()
        return user

    return make


@pytest.fixture
def make_token(db):
    """make_token(user) -> plain API token."""

    def make(user: User) -> str:
        with db.write() as session:
            return create_token(session, user, name="test")

    return make


@pytest.fixture
def auth_header(make_token):
    return lambda user: {"Authorization": f"Bearer {make_token(user)}"}


def sample_tasks(n: int, k: int = 2, prefix: str = "prompt") -> list[dict]:
    return [
        {"prompt": f"{prefix} {i}", "responses": [{"text": f"answer {i}.{j}", "model": f"m{j}"} for j in range(k)], "meta": {"i": i}}
        for i in range(n)
    ]


@pytest.fixture
def task_rows():
    """task_rows(n, k=2, prefix="prompt") -> n task dicts in the JSONL contract."""
    return sample_tasks


@pytest.fixture
def make_project(db):
    """make_project(name, n_tasks=3, k=2, overlap=1, **settings) -> Project (with n_tasks tasks imported)."""

    def make(name: str = "demo", n_tasks: int = 3, k: int = 2, overlap: int = 1, tasks=None, **settings):
        with db.write() as session:
            project = create_project(session, name, k=k, overlap=overlap, **settings)
            import_tasks(session, project, tasks if tasks is not None else sample_tasks(n_tasks, k), source="test")
        return project

    return make


@pytest.fixture
def live_server(db_url, serve_labeler, tmp_path):
    """`labeler serve` as a subprocess on a free port and this test's database (log: tmp_path/server.log)."""
    return serve_labeler(db_url, secret_key=SECRET_KEY, log_path=tmp_path / "server.log")
