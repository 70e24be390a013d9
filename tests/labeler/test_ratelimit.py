"""Rate limits (labeler.ratelimit, Flask-Limiter): failed logins per account, API calls per token, and
counters that several server workers share through a SQLite file."""

import sqlite3

import pytest
import requests

from conftest import PASSWORD
from labeler.app import create_app
from labeler.errors import LabelerError
from labeler.ratelimit import SqliteStorage
from test_auth import login


def test_failed_logins_are_limited_per_account_from_any_address(db_url, make_user):
    app = create_app({"TESTING": True, "DATABASE_URL": db_url, "LOGIN_RATE_LIMIT": 2})
    make_user("ann")
    make_user("bob")

    def attempt(username, password, address):  # a new browser each time: no session carried over
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return login(client, username, password)

    # guesses spread over two addresses count together
    assert [attempt("ann", "guess", address).status_code for address in ("10.0.0.1", "10.0.0.2")] == [401, 401]
    blocked = attempt("ann", PASSWORD, "10.0.0.3")
    assert blocked.status_code == 429 and "Too many failed attempts" in blocked.text
    assert 1 <= int(blocked.headers["Retry-After"]) <= 61
    # other accounts are not affected, and a successful login is not a failure: it spends nothing
    assert [attempt("bob", PASSWORD, "10.0.0.3").status_code for _ in range(3)] == [302, 302, 302]


def test_api_calls_are_limited_per_token(db_url, make_user, auth_header):
    client = create_app({"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "3 per minute"}).test_client()
    ann, bob = auth_header(make_user("ann")), auth_header(make_user("bob"))
    assert [client.get("/api/v1/projects", headers=ann).status_code for _ in range(3)] == [200, 200, 200]
    limited = client.get("/api/v1/projects", headers=ann)
    assert limited.status_code == 429 and limited.is_json and "rate limit" in limited.json["error"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 61  # seconds until the minute's window ends
    assert client.get("/api/v1/projects", headers=bob).status_code == 200  # another token has its own budget
    assert client.get("/api/v1/openapi.json").status_code == 200  # the document is never limited


def test_answers_within_the_limit_carry_no_rate_limit_headers(client, make_user, auth_header):
    """No X-RateLimit-* or Retry-After on every answer (each cost two storage reads): only a 429 says when."""
    answer = client.get("/api/v1/projects", headers=auth_header(make_user("ann")))
    assert answer.status_code == 200
    assert not [name for name in answer.headers.keys() if name.lower().startswith("x-ratelimit") or name == "Retry-After"]


def test_a_bad_api_limit_stops_the_app_at_start(db_url):
    with pytest.raises(LabelerError, match="LABELER_API_RATE_LIMIT 'lots'"):
        create_app({"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "lots"})


def test_limits_can_be_switched_off(db_url, make_user, auth_header):
    client = create_app({"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "1 per minute",
                         "RATELIMIT_ENABLED": False}).test_client()
    ann = auth_header(make_user("ann"))
    assert [client.get("/api/v1/projects", headers=ann).status_code for _ in range(3)] == [200, 200, 200]


def test_sqlite_storage_is_shared_between_workers(db_url, make_user, auth_header, tmp_path):
    """Two apps (as two gunicorn workers would be) on one sqlite:/// storage spend one budget."""
    config = {"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "4 per minute",
              "RATE_LIMIT_STORAGE": f"sqlite:///{tmp_path / 'limits.db'}"}
    worker_a, worker_b = create_app(config).test_client(), create_app(config).test_client()
    ann = auth_header(make_user("ann"))
    codes = [(worker_a if i % 2 else worker_b).get("/api/v1/projects", headers=ann).status_code for i in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_sqlite_storage_counts_and_expires(tmp_path):
    storage = SqliteStorage(f"sqlite:///{tmp_path / 'limits.db'}")
    assert storage.incr("k", expiry=60) == 1 and storage.incr("k", expiry=60, amount=2) == 3
    assert storage.get("k") == 3 and storage.get("other") == 0
    assert storage.incr("short", expiry=0) == 1  # already expired: the next hit starts a new window
    assert storage.incr("short", expiry=0) == 1
    storage.clear("k")
    assert storage.get("k") == 0 and storage.check()


def test_serve_runs_gunicorn_with_workers_and_threads(serve_labeler, db_url, tmp_path, make_user, make_token):
    base = serve_labeler(db_url, args=("--workers", "2", "--threads", "2"), log_path=tmp_path / "serve.log",
                         env={"LABELER_API_RATE_LIMIT": "3 per minute"})
    response = requests.get(f"{base}/api/v1/openapi.json", timeout=10)
    assert response.headers["Server"].startswith("gunicorn")
    log = (tmp_path / "serve.log").read_text()
    assert "2 workers x 2 threads" in log and "labeler-limits-" in log
    # the workers share the per-token budget (new connections, so both workers get requests)
    headers = {"Authorization": f"Bearer {make_token(make_user('ann'))}"}
    codes = [requests.get(f"{base}/api/v1/projects", headers=headers, timeout=10).status_code for _ in range(8)]
    assert codes[:3] == [200, 200, 200] and set(codes[3:]) == {429}


def test_serve_debug_runs_the_development_server(serve_labeler, db_url, tmp_path):
    base = serve_labeler(db_url, args=("--debug",), log_path=tmp_path / "serve.log")
    assert requests.get(f"{base}/api/v1/openapi.json", timeout=10).headers["Server"].startswith("Werkzeug")


def in_new_thread(call):
    """Run call() in a thread of its own, as a new gunicorn thread would: it opens its own storage connection."""
    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", call()))
    thread.start()
    thread.join()
    return result["value"]


def test_a_removed_limits_file_comes_back_and_still_limits(db_url, make_user, auth_header, tmp_path):
    """A $TMPDIR cleaner removes the counters' file: a new connection recreates it with its table."""
    limits = tmp_path / "limits.db"
    client = create_app({"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "2 per minute",
                         "RATE_LIMIT_STORAGE": f"sqlite:///{limits}"}).test_client()
    ann = auth_header(make_user("ann"))
    assert client.get("/api/v1/projects", headers=ann).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"limits.db{suffix}").unlink(missing_ok=True)
    statuses = in_new_thread(lambda: [client.get("/api/v1/projects", headers=ann).status_code for _ in range(3)])
    assert statuses == [200, 200, 429] and limits.exists()


def test_a_failing_limits_storage_serves_without_limits_instead_of_500(db_url, make_user, auth_header, tmp_path, caplog):
    limits = tmp_path / "limits.db"
    app = create_app({"TESTING": True, "DATABASE_URL": db_url, "API_RATE_LIMIT": "1 per minute", "LOGIN_RATE_LIMIT": 1,
                      "RATE_LIMIT_STORAGE": f"sqlite:///{limits}"})
    client = app.test_client()
    make_user("bob")
    ann = auth_header(make_user("ann"))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"limits.db{suffix}").unlink(missing_ok=True)
    limits.mkdir()  # where the file was, a folder: SQLite cannot open it ("unable to open database file")

    def calls():
        api = [client.get("/api/v1/projects", headers=ann).status_code for _ in range(3)]
        logins = [login(app.test_client(), "bob", "guess").status_code for _ in range(3)]
        return api, logins

    api, logins = in_new_thread(calls)
    assert api == [200, 200, 200] and logins == [401, 401, 401]  # served, unlimited; never 500
    assert "rate-limit storage" in caplog.text and "unable to open database file" in caplog.text


def test_a_failing_limits_storage_is_an_error_when_swallowing_is_off(db_url, make_user, auth_header, tmp_path):
    """RATELIMIT_SWALLOW_ERRORS false: the API's check, like Flask-Limiter's own, lets the storage error through."""
    limits = tmp_path / "limits.db"
    app = create_app({"TESTING": True, "DATABASE_URL": db_url, "RATE_LIMIT_STORAGE": f"sqlite:///{limits}",
                      "RATELIMIT_SWALLOW_ERRORS": False})
    client = app.test_client()
    ann = auth_header(make_user("ann"))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"limits.db{suffix}").unlink(missing_ok=True)
    limits.mkdir()

    def call():
        try:
            return client.get("/api/v1/projects", headers=ann).status_code
        except sqlite3.Error as err:  # TESTING propagates the error that a server would answer 500 with
            return err

    assert "unable to open database file" in str(in_new_thread(call))
