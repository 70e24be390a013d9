"""Alembic environment: runs the labeler's migrations on the database URL that `labeler init-db` passes in
(config.attributes["database_url"]), else LABELER_DATABASE_URL, else sqlite:///labels.db.

The engine comes from labeler.db.make_engine so SQLite gets the same WAL/foreign-key pragmas as the app.
render_as_batch lets future revisions ALTER tables on SQLite (which rebuilds them in a batch).
"""

import os

from alembic import context

from labeler import models  # noqa: F401 - registers the tables on Base.metadata
from labeler.db import Base, make_engine

config = context.config
url = config.attributes.get("database_url") or os.environ.get("LABELER_DATABASE_URL", "sqlite:///labels.db")


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
