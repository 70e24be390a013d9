"""Engine and sessions. SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy
timeout; write transactions begin with BEGIN IMMEDIATE so that a read-then-write never upgrades a shared
lock mid-transaction (the cause of "database is locked"). Any other SQLAlchemy URL (PostgreSQL) works
unchanged: the SQLite-only parts are skipped.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000


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
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """One per app (or per CLI call): `read()` for queries, `write()` for read-then-write transactions."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)

    def create_all(self) -> None:
        from labeler import models  # noqa: F401 - registers the tables

        Base.metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction holding the write lock from its first statement; commits on success."""
        with self._writer() as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
