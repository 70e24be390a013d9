"""Engine and sessions. SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy
timeout; write transactions begin with BEGIN IMMEDIATE so that a read-then-write never upgrades a shared
lock mid-transaction (the cause of "database is locked"). Any other SQLAlchemy URL (PostgreSQL) works
unchanged: the SQLite-only parts are skipped.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000
# PostgreSQL SQLSTATEs of a server going away or not back yet: admin_shutdown, crash_shutdown (another
# backend crashed), cannot_connect_now (starting up, shutting down, in recovery), too_many_connections;
# class 08 (connection exception) is checked by prefix.
POSTGRES_UNAVAILABLE = ("57P01", "57P02", "57P03", "53300")
# SQLite's primary result codes for a file that is busy past the busy timeout or cannot be opened
# (SQLITE_BUSY 'database is locked', SQLITE_LOCKED, SQLITE_CANTOPEN 'unable to open database file').
SQLITE_UNAVAILABLE = {5, 6, 14}
SQLITE_UNAVAILABLE_MESSAGES = ("database is locked", "database table is locked", "unable to open database file")


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    is_sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}} if is_sqlite else {"pool_pre_ping": True}
    engine = create_engine(url, **kwargs)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event below emit BEGIN itself
            cur = dbapi_conn.cursor()
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            options = conn.get_execution_options()
            if options.get("sqlite_single_statement", False):
                return  # Database.lookup: one SELECT, its own snapshot in autocommit mode; a BEGIN adds nothing
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sqlite_immediate", False) else "BEGIN")

    return engine


def database_unavailable(err: BaseException) -> bool:
    """Whether a SQLAlchemy error says the database is down, restarting or busy (try again later) rather
    than that the statement is wrong: a lost connection (SQLAlchemy's own disconnect test), a refused or
    failed connect, a PostgreSQL server shutting down or starting up, a SQLite file locked past the busy
    timeout or that cannot be opened. labeler.errors answers these 503 with Retry-After."""
    if isinstance(err, DisconnectionError):
        return True
    if not isinstance(err, DBAPIError):
        return False
    if err.connection_invalidated:
        return True
    if not isinstance(err, (OperationalError, InterfaceError)):
        return False
    orig = err.orig
    if hasattr(orig, "sqlstate"):
        # psycopg: no SQLSTATE means the connection itself failed: refused, lost, timed out, or refused by
        # the server ("the database system is starting up"). libpq gives a failed connect no SQLSTATE, so
        # a server that refuses us for good (no such database, a wrong password) is a 503 too; the log
        # line says which.
        state = orig.sqlstate
        return state is None or state.startswith("08") or state in POSTGRES_UNAVAILABLE
    code = getattr(orig, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in SQLITE_UNAVAILABLE
    return any(message in str(orig) for message in SQLITE_UNAVAILABLE_MESSAGES)


class WriterLock:
    """One SQLite writer at a time: among this process's threads (a lock) and among the processes that write
    the file (gunicorn's workers, the CLI), by flock(2) on `<database>-lock` beside it. A writer waiting on
    either wakes the moment the holder is done; in SQLite's busy handler it would sleep in steps of up to
    100 ms, which made the slowest 1% of requests wait a quarter of a second and more under 50 clients
    (scripts/bench_labeler.py). Any other program that writes the file still meets the busy handler."""

    def __init__(self, path: str | None):
        self._threads = threading.RLock()
        self._path, self._fd, self._pid, self._depth = path, None, None, 0

    def _file(self) -> int | None:
        if self._path and (self._fd is None or self._pid != os.getpid()):
            # after a fork, an inherited descriptor would share its lock with the parent: open our own
            if self._fd is not None:
                os.close(self._fd)  # the parent's lock stays: it holds its own reference
                self._fd = None
            try:
                self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644), os.getpid()
            except OSError:  # a folder we cannot write: the threads' lock and SQLite's busy handler remain
                self._path = None
        return self._fd if self._path else None

    def __enter__(self):
        self._threads.acquire()
        self._depth += 1
        if self._depth == 1:
            try:
                fd = self._file()
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._depth -= 1
                self._threads.release()
                raise
        return self

    def __exit__(self, *exc_info):
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return None if not database or database == ":memory:" or database.startswith("file:") else database


class Database:
    """One per app (or per CLI call): `read()` for queries, `write()` for read-then-write transactions."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        # SQLite has one writer at a time: writers queue on a lock that wakes the next at once (WriterLock);
        # PostgreSQL needs none (row locks).
        if url.startswith("sqlite"):
            path = sqlite_file(url)
            self._write_lock = WriterLock(path + "-lock" if path else None)
        else:
            self._write_lock = nullcontext()
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)
        self._lookup = sessionmaker(bind=self.engine.execution_options(sqlite_single_statement=True), expire_on_commit=False)

    def create_all(self) -> None:
        from labeler import models  # noqa: F401 - registers the tables

        Base.metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def lookup(self) -> Iterator[Session]:
        """A read of ONE statement (the API's token lookup on every request). On SQLite it runs without a
        BEGIN: a single SELECT is consistent on its own, and BEGIN is a round trip of its own. A session
        that runs several statements must use `read()`, whose statements share one snapshot. Elsewhere
        (PostgreSQL) it is `read()`."""
        with self._lookup() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction holding the write lock from its first statement; commits on success."""
        with self._write_lock, self._writer() as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, WriterLock):
            self._write_lock.close()


def get_db(app=None) -> Database:
    """The app's Database (flaskr's `get_db`): the factory puts it in app.extensions, views read it here."""
    from flask import current_app

    return (app or current_app).extensions["labeler_db"]


PACKAGE_DIR = Path(__file__).resolve().parent


def alembic_config(url: str):
    """Alembic's config for this package; the script location is set here so any working directory works."""
    from alembic.config import Config

    config = Config(str(PACKAGE_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    config.attributes["database_url"] = url  # not set_main_option: a URL's '%' would trip ini interpolation
    return config


def upgrade_database(url: str) -> str:
    """`alembic upgrade head`: creates a fresh database, migrates an old one, and is a no-op at head.

    A database made by `create_all` (no alembic_version table) is stamped at head instead of migrated,
    since create_all already built the current schema. Returns the revision the database is at.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(url)
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if "user" in tables and "alembic_version" not in tables:
        command.stamp(config, "head")
    else:
        command.upgrade(config, "head")
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None when it was never initialised."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
