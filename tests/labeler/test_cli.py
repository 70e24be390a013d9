"""The `labeler` command line: init-db (Alembic, idempotent, matches the models), users, projects, import,
stats, serve's refusals, and one-line errors."""

import json
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from labeler import models  # noqa: F401
from labeler.accounts import check_password, user_for_token
from labeler.cli import main
from labeler.db import Base, Database, head_revision, make_engine
from labeler.models import Project, Task, User


@pytest.fixture
def fresh_url(new_database):
    """An empty database (no tables) of this test's backend."""
    return new_database(migrated=False)


def run(runner, url, *args, input=None):
    return runner.invoke(main, [*args, "--db", url], input=input)


def test_init_db_creates_the_schema_and_is_idempotent(runner, fresh_url):
    first = run(runner, fresh_url, "init-db")
    assert first.exit_code == 0, first.output
    assert head_revision() in first.output
    assert run(runner, fresh_url, "users", "add", "ann", "--password", "pw").exit_code == 0
    second = run(runner, fresh_url, "init-db")
    assert second.exit_code == 0, second.output
    engine = make_engine(fresh_url)
    try:
        with engine.connect() as conn:
            # the migrated schema is exactly what the models describe (no drift between the two)
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with Database(fresh_url).read() as session:
        assert session.scalar(select(func.count(User.id))) == 1  # data survived the second init-db


def test_users_add_list_token_deactivate(runner, db_url, db):
    assert run(runner, db_url, "users", "add", "boss", "--role", "admin", "--password", "s3cret").exit_code == 0
    prompted = run(runner, db_url, "users", "add", "ann", input="pw1\npw1\n")
    assert prompted.exit_code == 0, prompted.output
    duplicate = run(runner, db_url, "users", "add", "ann", "--password", "x")
    assert duplicate.exit_code == 1 and duplicate.output.strip() == "labeler: error: user 'ann' already exists"
    listing = run(runner, db_url, "users", "list").output
    assert "boss" in listing and "admin" in listing and "ann" in listing
    token = run(runner, db_url, "users", "token", "ann").output.strip()
    with db.read() as session:
        ann = session.scalar(select(User).where(User.username == "ann"))
        assert check_password(ann, "pw1") and not check_password(ann, "pw2")
        assert ann.password_hash != "pw1"
        assert user_for_token(session, token).username == "ann"
    assert run(runner, db_url, "users", "deactivate", "ann").exit_code == 0
    assert "(deactivated)" in run(runner, db_url, "users", "list").output
    with db.read() as session:
        assert user_for_token(session, token) is None
    missing = run(runner, db_url, "users", "token", "nobody")
    assert missing.exit_code == 1 and "user 'nobody' does not exist" in missing.output


def test_projects_create_with_guidelines_file_then_import_and_stats(runner, db_url, db, tmp_path, task_rows):
    guide = tmp_path / "guide.md"
    guide.write_text("# Rank by helpfulness\n")
    created = run(runner, db_url, "projects", "create", "demo", "--k", "2", "--overlap", "2", "--criteria", "helpful, harmless",
                  "--guidelines", str(guide), "--lease-seconds", "300")
    assert created.exit_code == 0, created.output
    bad = run(runner, db_url, "projects", "create", "bad", "--k", "1")
    assert bad.exit_code == 1 and "field 'k': Input should be greater than or equal to 2" in bad.output
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in task_rows(4)))
    first = run(runner, db_url, "import", str(tasks), "--project", "demo")
    assert first.exit_code == 0 and "imported 4 tasks" in first.output
    again = run(runner, db_url, "import", str(tasks), "--project", "demo")
    assert "imported 0 tasks" in again.output and "4 already present" in again.output
    with db.read() as session:
        project = session.scalar(select(Project))
        assert project.guidelines == "# Rank by helpfulness\n" and project.criteria == ["helpful", "harmless"]
        assert project.lease_seconds == 300 and session.scalar(select(func.count(Task.id))) == 4
        assert set(session.scalars(select(Task.source))) == {"tasks.jsonl"}
    stats = json.loads(run(runner, db_url, "stats", "--project", "demo").output)
    assert stats["counts"]["tasks"] == 4 and stats["counts"]["annotations_needed"] == 8
    assert "demo" in run(runner, db_url, "projects", "list").output
    unknown = run(runner, db_url, "import", str(tasks), "--project", "nope")
    assert unknown.exit_code == 1 and "project 'nope' does not exist" in unknown.output


def test_uninitialised_database_gives_a_one_line_hint(runner, fresh_url):
    result = run(runner, fresh_url, "users", "list")
    assert result.exit_code == 1
    assert result.output.startswith("labeler: error: database error") and "labeler init-db" in result.output


def test_every_command_explains_itself(runner):
    commands = [[], ["init-db"], ["users"], ["users", "add"], ["users", "list"], ["users", "deactivate"], ["users", "token"],
                ["projects"], ["projects", "create"], ["projects", "list"], ["import"], ["export"], ["stats"], ["serve"]]
    for args in commands:
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, args
        body = result.output.split("Options:")[0]
        assert len(body.split("\n", 2)[-1].strip()) > 20, f"{args}: help text too thin"
        if args and args not in (["users"], ["projects"]):
            assert "--db URL" in result.output, args


def test_live_server_closes_a_keepalive_connection_after_its_request_budget(live_server):
    """labeler.server.BalancedThreadWorker: the KEEPALIVE_REQUESTS-th request on one connection is answered
    with Connection: close and the connection closed, so that clients reconnect and spread over the workers."""
    import http.client
    from urllib.parse import urlsplit

    from labeler.server import KEEPALIVE_REQUESTS

    where = urlsplit(live_server)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    closes, sockets = [], set()
    for i in range(1, KEEPALIVE_REQUESTS + 6):
        conn.request("GET", "/api/v1/projects")  # 401 without a token: a cheap answer
        response = conn.getresponse()
        response.read()
        assert response.status == 401
        sockets.add(conn.sock.getsockname() if conn.sock else None)
        if response.getheader("Connection", "").lower() == "close":
            closes.append(i)
    conn.close()
    assert closes == [KEEPALIVE_REQUESTS]
    assert None in sockets and len(sockets) == 3  # the first connection, closed after its budget, then a second


def test_serve_refuses_without_secret_key_and_without_schema(tmp_path, db_url):
    env_base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "labeler.cli", "serve", "--port", "1", "--db"]
    no_key = subprocess.run(cmd + [db_url], capture_output=True, text=True, env=env_base, timeout=60)
    assert no_key.returncode == 1 and "LABELER_SECRET_KEY is not set" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    no_schema = subprocess.run(cmd + [empty], capture_output=True, text=True, env={**env_base, "LABELER_SECRET_KEY": "k"}, timeout=60)
    assert no_schema.returncode == 1 and "labeler init-db" in no_schema.stderr


def test_live_server_serves_the_api(live_server, make_user, make_token, make_project):
    import requests

    make_project("demo", n_tasks=1)
    token = make_token(make_user("alice"))
    response = requests.get(f"{live_server}/api/v1/projects/demo/next", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200 and response.json()["task"]["prompt"] == "prompt 0"
    assert requests.get(f"{live_server}/api/v1/projects", timeout=10).status_code == 401


def test_options_are_spelled_with_underscores_and_accept_dashes(runner, db_url, db):
    """Both command lines spell options as TRL does (`--lease_seconds`); the dashed form still parses."""
    help_text = run(runner, db_url, "projects", "create", "--help").output
    assert "--lease_seconds, --lease-seconds" in help_text and "--no_edit, --no-edit" in help_text
    assert "--test_fraction, --test-fraction" in run(runner, db_url, "export", "--help").output
    created = run(runner, db_url, "projects", "create", "under", "--lease_seconds", "120", "--no_edit", "--no-rationale")
    assert created.exit_code == 0, created.output
    with db.read() as session:
        project = session.scalar(select(Project).where(Project.name == "under"))
        assert project.lease_seconds == 120 and not project.allow_edit and not project.ask_rationale


def test_migration_0002_counts_existing_tasks_load(fresh_url):
    """A database labelled under 0001 gets task.taken = annotations + active leases, and project.open_tasks,
    when upgraded."""
    from alembic import command

    from labeler.db import alembic_config, upgrade_database

    command.upgrade(alembic_config(fresh_url), "0001")
    now = "2026-01-01 00:00:00"
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as conn:
            sql = conn.exec_driver_sql
            sql(f"INSERT INTO project (id, name, k, overlap, criteria, guidelines, lease_seconds, allow_edit, ask_rationale, created_at) "
                f"VALUES (1, 'p', 2, 3, '[]', '', 60, true, true, '{now}')")
            for uid in (1, 2, 3):
                sql(f"INSERT INTO \"user\" (id, username, password_hash, role, active, simulated, created_at) "
                    f"VALUES ({uid}, 'u{uid}', 'x', 'annotator', true, false, '{now}')")
            sql("INSERT INTO prompt (id, project_id, prompt, prompt_hash, meta) VALUES (1, 1, '\"q\"', 'h', '{}')")
            for tid in (1, 2):
                sql(f"INSERT INTO task (id, project_id, prompt_id, content_hash, meta, is_gold, source, created_at) "
                    f"VALUES ({tid}, 1, 1, 'c{tid}', '{{}}', false, 't', '{now}')")
            for aid, (tid, uid, status) in enumerate([(1, 1, "done"), (1, 2, "active"), (1, 3, "expired"), (2, 1, "active")], 1):
                sql(f"INSERT INTO assignment (id, task_id, user_id, status, display_order, leased_at, expires_at) "
                    f"VALUES ({aid}, {tid}, {uid}, '{status}', '[]', '{now}', '{now}')")
            sql(f"INSERT INTO annotation (id, task_id, user_id, ranking, all_bad, scores, rationale, display_order, seconds_spent, "
                f"created_at, updated_at) VALUES (1, 1, 1, '{{}}', false, '{{}}', '', '[]', 1.0, '{now}', '{now}')")
    finally:
        engine.dispose()
    upgrade_database(fresh_url)
    with Database(fresh_url).read() as session:
        assert dict(session.execute(select(Task.id, Task.taken)).all()) == {1: 2, 2: 1}
        assert session.scalar(select(Project.open_tasks)) == 2  # both below the overlap of 3
