"""A database that is down, restarting or locked answers 503 with Retry-After (JSON on the API, the error
page in the browser) and writes nothing; any other database error stays a 500. Real conditions only: a
SQLite file that cannot be opened or is held by another writer past the busy timeout, a PostgreSQL port
that refuses connections, and (with scripts/pg_test_server.sh) an immediate-mode restart of the server.
tests/labeler/test_crash.py checks the same against the real `labeler serve` under ten clients."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading

import pytest
from sqlalchemy import func, select

from conftest import SECRET_KEY
from labeler import db as labeler_db
from labeler.app import create_app
from labeler.db import get_db
from labeler.errors import RETRY_AFTER_SECONDS
from labeler.models import Annotation, Assignment, Task

TOKEN = {"Authorization": "Bearer any-token-the-database-would-check"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_app(url: str, tmp_path, **config):
    return create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": SECRET_KEY,
                       "EXPORT_DIR": str(tmp_path / "exports"), **config})


def assert_503_json(resp) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert resp.is_json and "database is unavailable" in resp.get_json()["error"]


def assert_503_page(resp) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert resp.mimetype == "text/html" and "Service unavailable" in resp.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_unreachable_database_answers_503_with_retry_after(kind, tmp_path):
    # a SQLite file in a folder that does not exist; a PostgreSQL port nothing listens on
    url = (f"sqlite:///{tmp_path / 'gone' / 'labels.db'}" if kind == "sqlite"
           else f"postgresql+psycopg://labeler@127.0.0.1:{free_port()}/labeler?connect_timeout=5")
    app = make_app(url, tmp_path)
    client = app.test_client()
    assert_503_json(client.get("/api/v1/projects", headers=TOKEN))
    assert_503_json(client.get("/api/v1/projects/demo/next", headers=TOKEN))
    assert_503_json(client.post("/api/v1/tasks/1/annotations", json={"ranking": {"1": 1, "2": 2}}, headers=TOKEN))
    client.get("/login")  # the CSRF token lives in the session
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    assert_503_page(client.post("/login", data={"username": "alice", "password": "pw", "csrf_token": csrf}))
    with client.session_transaction() as session:  # a logged-in browser: current_user() reads the database
        session["user_id"], session["session_version"] = 1, 1
    assert_503_page(client.get("/"))
    assert client.get("/api/v1/openapi.json").status_code == 200  # what needs no database still works
    get_db(app).dispose()


def test_other_database_errors_stay_500(new_database, tmp_path):
    """A database without the labeler's tables (never `labeler init-db`) is a fault to fix, not an outage
    to wait out: 'no such table' on SQLite, 'relation does not exist' on PostgreSQL."""
    url = new_database(migrated=False)
    app = make_app(url, tmp_path, TESTING=False)  # Flask answers 500 instead of raising into the test
    resp = app.test_client().get("/api/v1/projects", headers=TOKEN)
    assert resp.status_code == 500 and "Retry-After" not in resp.headers
    get_db(app).dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_locked_past_the_busy_timeout_answers_503_and_writes_nothing(db_url, db, make_user, make_token,
                                                                            make_project, tmp_path, monkeypatch):
    make_project("demo", n_tasks=2)
    token = {"Authorization": f"Bearer {make_token(make_user('alice'))}"}
    monkeypatch.setattr(labeler_db, "BUSY_TIMEOUT_MS", 200)  # the app's engine waits 0.2 s, not 30 s
    app = make_app(db_url, tmp_path)
    client = app.test_client()
    task = client.get("/api/v1/projects/demo/next", headers=token).get_json()["task"]
    ranking = {str(r["id"]): i + 1 for i, r in enumerate(task["responses"])}

    other = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds SQLite's write lock (it does not know our file lock)
    try:
        assert_503_json(client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": ranking}, headers=token))
        assert_503_json(client.get("/api/v1/projects/demo/next", headers=token))  # next writes its lease
        with db.read() as session:  # WAL: readers go on; the 503s left no trace
            assert session.scalar(select(func.count()).select_from(Annotation)) == 0
            assert session.scalar(select(func.sum(Task.taken))) == 1  # alice's one lease, from before the lock
            assert session.scalar(select(func.count()).select_from(Assignment)) == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": ranking}, headers=token).status_code == 201
    get_db(app).dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgres_restart_answers_503_then_2xx(db_url, db, make_user, make_token, make_project, tmp_path):
    """An immediate-mode restart of the PostgreSQL server under a client: 2xx or 503 with Retry-After,
    never a 500, and 2xx again once the server is back."""
    restart = os.environ.get("LABELER_TEST_POSTGRES_RESTART")
    if not restart:
        pytest.skip("LABELER_TEST_POSTGRES_RESTART is not set (scripts/pg_test_server.sh sets it)")
    # the throwaway server commits with synchronous_commit=off, which a crash may undo: this database asks for on
    from sqlalchemy import create_engine

    admin = create_engine(os.environ["LABELER_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{db_url.rsplit("/", 1)[1]}" SET synchronous_commit = on')
    admin.dispose()
    make_project("demo", n_tasks=300)
    token = {"Authorization": f"Bearer {make_token(make_user('alice'))}"}
    app = make_app(db_url, tmp_path)
    client = app.test_client()
    assert client.get("/api/v1/projects/demo/next", headers=token).status_code == 200

    done = threading.Event()
    outcome = {}

    def restart_server():
        outcome["restart"] = subprocess.run(restart, shell=True, capture_output=True, text=True, timeout=120)
        done.set()

    statuses = []
    thread = threading.Thread(target=restart_server)
    thread.start()
    while not done.is_set():
        resp = client.get("/api/v1/projects/demo/next", headers=token)
        statuses.append(resp.status_code)
        if resp.status_code == 503:
            assert_503_json(resp)
        else:
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
            task = resp.get_json()["task"]
            ranking = {str(r["id"]): i + 1 for i, r in enumerate(task["responses"])}
            sent = client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": ranking}, headers=token)
            statuses.append(sent.status_code)
            if sent.status_code == 503:
                assert_503_json(sent)
            else:
                assert sent.status_code == 201, sent.get_data(as_text=True)[:300]
    thread.join()
    assert outcome["restart"].returncode == 0, outcome["restart"].stderr
    assert 503 in statuses and 500 not in statuses
    assert client.get("/api/v1/projects/demo/next", headers=token).status_code == 200  # back once PostgreSQL is
    get_db(app).dispose()
