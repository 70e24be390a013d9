"""`labeler`: the labeling app's command line.

    labeler init-db
    labeler users add alice --role admin
    labeler users token alice
    labeler projects create demo --k 3 --overlap 2 --criteria helpful,harmless --guidelines guide.md
    labeler import runs/demo/generate/tasks.jsonl --project demo
    labeler serve --port 5000 --workers 2 --threads 8
    labeler export --project demo --out exports/demo

Every command takes --db URL (default: $LABELER_DATABASE_URL, else sqlite:///labels.db).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from labeler.app import DEFAULT_DATABASE_URL
from labeler.audit import project_detail, record_event
from labeler.errors import LabelerError
from labeler.schemas import AGGREGATIONS


class UserError(click.ClickException):
    """A LabelerError on its way out: one line, no traceback, exit status 1."""

    def show(self, file=None):
        click.echo(f"labeler: error: {self.message}", err=True)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LabelerError as err:
            raise UserError(str(err)) from None
        # most often a database that `init-db` never created: SQLite says OperationalError ("no such
        # table"), PostgreSQL ProgrammingError (UndefinedTable)
        except (OperationalError, ProgrammingError) as err:
            reason = str(err.orig) if err.orig is not None else str(err)
            raise UserError(f"database error ({reason}); is the database initialised? run `labeler init-db --db URL`") from None


def db_option(command):
    """--db on every command, so each can point at another database without touching the environment."""

    @click.option("--db", "db_url", envvar="LABELER_DATABASE_URL", default=DEFAULT_DATABASE_URL, show_default=True,
                  show_envvar=True, metavar="URL", help="SQLAlchemy database URL, e.g. sqlite:///labels.db or postgresql+psycopg://...")
    @functools.wraps(command)
    def wrapped(*args, db_url, **kwargs):
        return command(*args, db_url=db_url, **kwargs)

    return wrapped


def open_db(url: str):
    from labeler.db import Database

    return Database(url)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rlhf-loop", prog_name="labeler")
def main():
    """The labeling app: annotators rank model responses in the browser; admins run projects, check
    quality and export TRL preference data.

    A typical session: init-db, users add (an admin and annotators), projects create, import a tasks
    JSONL file (from `rlhf generate`), serve, and once labels are in, export.
    """


@main.command("init-db")
@db_option
def init_db(db_url):
    """Create or migrate the database schema (alembic upgrade head).

    Safe to run again: a database already at the latest schema is left as it is.
    """
    from labeler.db import upgrade_database

    revision = upgrade_database(db_url)
    click.echo(f"database {db_url} is at schema revision {revision}")


# ---- users -------------------------------------------------------------------------------------------


@main.group(cls=Group)
def users():
    """Accounts: add admins and annotators, list them, deactivate them, make API tokens."""


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["annotator", "admin"]), default="annotator", show_default=True,
              help="admins run projects, see quality figures and export; annotators label.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The login password (prompted for, hidden, when not given).")
@click.option("--simulated", is_flag=True, help="Mark the account as a simulated annotator (a script, not a person).")
@db_option
def users_add(username, role, password, simulated, db_url):
    """Add a user who can log in to the web app."""
    from labeler.accounts import create_user

    with open_db(db_url).write() as session:
        user = create_user(session, username, password, role=role, simulated=simulated)
        record_event(session, "user_created", target=f"user {user.username}", detail={"role": user.role})
        click.echo(f"added {user.role} '{user.username}' (id {user.id})")


@users.command("list")
@db_option
def users_list(db_url):
    """List users: id, name, role, and whether they are active."""
    from labeler.models import User

    with open_db(db_url).read() as session:
        rows = session.scalars(select(User).order_by(User.id)).all()
    for user in rows:
        flags = ("" if user.active else " (deactivated)") + (" (simulated)" if user.simulated else "")
        click.echo(f"{user.id:>4}  {user.username:<24} {user.role:<10}{flags}")
    if not rows:
        click.echo("no users yet: add one with `labeler users add NAME --role admin`")


@users.command("deactivate")
@click.argument("username")
@db_option
def users_deactivate(username, db_url):
    """Stop a user from logging in or using their API tokens; their annotations stay."""
    from labeler.accounts import find_user, set_user_active

    with open_db(db_url).write() as session:
        set_user_active(session, find_user(session, username), False)  # also ends their browser sessions
        record_event(session, "user_deactivated", target=f"user {username}")
    click.echo(f"deactivated '{username}'")


@users.command("token")
@click.argument("username")
@click.option("--name", default="", help="A label for the token, e.g. the script that uses it.")
@db_option
def users_token(username, name, db_url):
    """Make a new API token for USERNAME and print it (shown this once; only its hash is stored)."""
    from labeler.accounts import create_token, find_user

    with open_db(db_url).write() as session:
        user = find_user(session, username)
        if not user.active:
            raise LabelerError(f"user '{username}' is deactivated", field="username")
        token = create_token(session, user, name=name)
        record_event(session, "token_created", target=f"user {username}", detail={"name": name})
    click.echo(token)


# ---- projects ----------------------------------------------------------------------------------------


@main.group(cls=Group)
def projects():
    """Labeling projects: K responses per task, N annotators per task, criteria and guidelines."""


@projects.command("create")
@click.argument("name")
@click.option("--k", type=int, default=2, show_default=True, help="Responses per task (2: pairwise; more: a ranking).")
@click.option("--overlap", type=int, default=1, show_default=True, help="Annotators per task (2+ lets you measure agreement).")
@click.option("--criteria", default="", help="Comma-separated names of optional 1-5 scores, e.g. helpful,harmless.")
@click.option("--guidelines", default="", help="Markdown shown to annotators: a file path, or the text itself.")
@click.option("--lease_seconds", "--lease-seconds", type=int, default=900, show_default=True,
              help="How long an annotator holds a task before it goes back to the pool.")
@click.option("--no_edit", "--no-edit", is_flag=True, help="Hide the 'write a better response' box.")
@click.option("--no_rationale", "--no-rationale", is_flag=True, help="Do not ask for a free-text rationale.")
@click.option("--kind", type=click.Choice(["ranking", "arena"]), default="ranking", show_default=True,
              help="arena: blind A/B votes between checkpoints (K = 2); the project page shows win rates.")
@db_option
def projects_create(name, k, overlap, criteria, guidelines, lease_seconds, no_edit, no_rationale, kind, db_url):
    """Create project NAME (letters, digits, '.', '_', '-'; it appears in URLs).

    Each task shows K responses to rank; each task is labeled by OVERLAP different annotators, which is
    what inter-annotator agreement is measured on. Tasks come later with `labeler import`.
    """
    from labeler.projects import create_project, project_settings

    if guidelines and len(guidelines) < 4096 and Path(guidelines).is_file():
        guidelines = Path(guidelines).read_text(encoding="utf-8")
    names = [c.strip() for c in criteria.split(",") if c.strip()]
    with open_db(db_url).write() as session:
        project = create_project(session, name, k=k, overlap=overlap, criteria=names, guidelines=guidelines,
                                 lease_seconds=lease_seconds, allow_edit=not no_edit, ask_rationale=not no_rationale,
                                 kind=kind)
        record_event(session, "project_created", target=f"project {project.name}",
                     detail=project_detail(project_settings(project)))
        click.echo(f"created project '{project.name}': k={project.k}, overlap={project.overlap}, criteria={project.criteria or '-'}")


@projects.command("list")
@db_option
def projects_list(db_url):
    """List projects with their settings and progress."""
    from labeler.models import Project
    from labeler.projects import count_project

    with open_db(db_url).read() as session:
        rows = session.scalars(select(Project).order_by(Project.id)).all()
        for p in rows:
            c = count_project(session, p)
            click.echo(f"{p.id:>4}  {p.name:<24} k={p.k} overlap={p.overlap}  tasks={c['tasks']} "
                       f"complete={c['tasks_complete']} annotations={c['annotations']}/{c['annotations_needed']}")
    if not rows:
        click.echo("no projects yet: create one with `labeler projects create NAME --k 2`")


# ---- data in and out ---------------------------------------------------------------------------------


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--project", "project_name", required=True, help="The project the tasks go to.")
@db_option
def import_file(file, project_name, db_url):
    """Import tasks from a JSONL FILE, one task per line:

    \b
    {"prompt": str | [{"role", "content"}, ...],
     "responses": [{"text": str, "model": str, "meta": {...}}, ...],   (exactly the project's K)
     "meta": {...}, "gold_ranking": [1, 2, 2, ...]}                    (both optional)

    The whole file is checked first: one bad line fails the import with its line number and nothing
    is written. Tasks already in the project are skipped, so re-importing a file adds nothing.
    """
    from labeler.importer import import_tasks, validate_tasks_file
    from labeler.projects import find_project

    db = open_db(db_url)
    with db.read() as session:
        k = find_project(session, project_name).k
    tasks = validate_tasks_file(file, k=k)
    with db.write() as session:
        counts = import_tasks(session, find_project(session, project_name), tasks, source=file.name)
        record_event(session, "tasks_uploaded", target=f"project {project_name}", detail={"file": file.name, **counts})
    click.echo(f"imported {counts['created']} tasks into '{project_name}' ({counts['skipped']} already present) from {file}")


@main.command("export")
@click.option("--project", "project_name", required=True, help="The project to export.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the datasets (preferences, sft, raw) and their JSONL copies.")
@click.option("--aggregation", type=click.Choice(AGGREGATIONS), default="majority", show_default=True,
              help="How rankings of several annotators become pairs: majority vote per pair (ties dropped) or Bradley-Terry scores.")
@click.option("--min_agreement", "--min-agreement", type=float, default=None, help="Drop tasks whose annotators agree on fewer pairs than this fraction (0-1).")
@click.option("--min_gold_accuracy", "--min-gold-accuracy", type=float, default=None, help="Drop annotators whose gold-task accuracy is below this (0-1).")
@click.option("--test_fraction", "--test-fraction", type=float, default=None,
              help="Fraction of prompts held out as the test split, in [0, 1) (deterministic by prompt; default 0.1).")
@db_option
def export(project_name, out_dir, aggregation, min_agreement, min_gold_accuracy, test_fraction, db_url):
    """Export a project as Hugging Face datasets and JSONL: TRL preference pairs, SFT data, raw annotations."""
    from labeler.export import export_project

    filters = {"aggregation": aggregation, "min_agreement": min_agreement, "min_gold_accuracy": min_gold_accuracy,
               "test_fraction": test_fraction}
    result = export_project(open_db(db_url), project_name, out_dir, **{k: v for k, v in filters.items() if v is not None})
    click.echo(json.dumps(result, indent=2, default=str))


@main.command("stats")
@click.option("--project", "project_name", required=True, help="The project to report on.")
@db_option
def stats(project_name, db_url):
    """Print a project's progress and quality figures (agreement, gold accuracy, throughput) as JSON."""
    from labeler.projects import count_project, find_project
    from labeler.quality import project_quality

    with open_db(db_url).read() as session:
        project = find_project(session, project_name)
        data = {"project": project.name, "counts": count_project(session, project),
                "quality": project_quality(session, project)}
    click.echo(json.dumps(data, indent=2, default=str))


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=5000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Server processes (gunicorn workers); about one per core.")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Threads per worker: requests one worker serves at once while others wait on the database.")
@click.option("--rate_limit_storage", "--rate-limit-storage", metavar="URL", envvar="LABELER_RATE_LIMIT_STORAGE", default=None, show_envvar=True,
              help="Where rate-limit counters live: sqlite:///path/limits.db (shared by the workers on this machine; "
                   "default: $TMPDIR/labeler-limits-UID-PORT.db), memory:// (one process), redis://host:6379 (several machines).")
@click.option("--debug", is_flag=True, help="Flask's development server in debug mode: tracebacks in the browser and a dev "
                                            "secret key. Never in production.")
@db_option
def serve(host, port, workers, threads, rate_limit_storage, debug, db_url):
    """Run the web app: gunicorn with WORKERS processes of THREADS threads each (the production server),
    or Flask's development server with --debug.

    Outside --debug it refuses to start unless LABELER_SECRET_KEY is set, and unless the database is at
    the latest schema (`labeler init-db`).
    """
    import tempfile

    from labeler.app import create_app, get_db
    from labeler.db import current_revision, head_revision

    limits_file = None
    if rate_limit_storage is None:
        # workers must share their counters, or each would allow the whole limit; a SQLite file needs no
        # server (and, unlike limits' memory:// storage, starts no expiry thread every 10 ms of traffic).
        # One file per user and port, removed on a clean stop; a server killed outright leaves it for the next.
        limits_file = Path(tempfile.gettempdir()) / f"labeler-limits-{os.getuid()}-{port}.db"
        rate_limit_storage = "memory://" if debug else f"sqlite:///{limits_file}"
    config = {"DATABASE_URL": db_url, "RATE_LIMIT_STORAGE": rate_limit_storage, **({"DEBUG": True} if debug else {})}
    app = create_app(config)  # the checks run here, in this process, before any worker starts
    try:
        if current_revision(get_db(app).engine) != head_revision():
            raise LabelerError(f"database {db_url} is not initialised or not at the latest schema: run `labeler init-db --db {db_url}`")
    finally:
        get_db(app).dispose()
    if debug:
        click.echo(f"labeler serving {db_url} on http://{host}:{port}/ (Flask development server, debug on)", err=True)
        app.run(host=host, port=port, debug=True, threaded=True, use_reloader=False)
        return
    from labeler.server import run_production

    click.echo(f"labeler serving {db_url} on http://{host}:{port}/ (gunicorn: {workers} workers x {threads} threads; "
               f"rate limits in {rate_limit_storage})", err=True)

    def remove_limits_file():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{limits_file}{suffix}").unlink(missing_ok=True)

    run_production(lambda: create_app(config), host, port, workers, threads, on_exit=remove_limits_file if limits_file else None)


if __name__ == "__main__":
    sys.exit(main())
