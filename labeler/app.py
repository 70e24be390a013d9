"""The Flask app factory: `create_app(test_config=None)`.

Configuration comes from, in order: defaults, `LABELER_*` environment variables, `test_config`.
  DATABASE_URL  SQLAlchemy URL (default sqlite:///labels.db: a SQLite file in WAL mode)
  SECRET_KEY    required outside debug/testing: the app refuses to start without one
  EXPORT_DIR    where exports made from the web/API go (default: <instance path>/exports)
  LOGIN_RATE_LIMIT, API_RATE_LIMIT, RATE_LIMIT_STORAGE   rate limits and their storage (labeler.ratelimit)
"""

from __future__ import annotations

import os

from flask import Flask

from labeler.db import Database, get_db  # noqa: F401 - get_db lives in labeler.db; kept importable here for old callers
from labeler.errors import LabelerError

DEFAULT_DATABASE_URL = "sqlite:///labels.db"


def load_settings(test_config: dict | None = None) -> dict:
    settings = {
        "DATABASE_URL": os.environ.get("LABELER_DATABASE_URL", DEFAULT_DATABASE_URL),
        "SECRET_KEY": os.environ.get("LABELER_SECRET_KEY"),
        "DEBUG": os.environ.get("LABELER_DEBUG", "0") == "1",
        "LEASE_SECONDS": int(os.environ.get("LABELER_LEASE_SECONDS", "0") or 0),  # 0: the project's own
        "LOGIN_RATE_LIMIT": int(os.environ.get("LABELER_LOGIN_RATE_LIMIT", "10")),  # failed logins / minute / account
        "API_RATE_LIMIT": os.environ.get("LABELER_API_RATE_LIMIT", "6000 per minute"),  # per token (labeler.ratelimit)
        "RATE_LIMIT_STORAGE": os.environ.get("LABELER_RATE_LIMIT_STORAGE", "memory://"),  # shared by workers: sqlite:///, redis://
        "EXPORT_DIR": os.environ.get("LABELER_EXPORT_DIR") or None,
        "TESTING": False,
    }
    settings.update(test_config or {})
    return settings


def create_app(test_config: dict | None = None) -> Flask:
    settings = load_settings(test_config)
    if not settings["SECRET_KEY"]:
        if settings["DEBUG"] or settings["TESTING"]:
            settings["SECRET_KEY"] = "dev-only-insecure-key"
        else:
            raise LabelerError("LABELER_SECRET_KEY is not set: the labeler refuses to start without a secret key "
                               "outside debug mode (e.g. export LABELER_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))'))")
    app = Flask(__name__)
    app.config.update(
        settings,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
    app.extensions["labeler_db"] = Database(app.config["DATABASE_URL"])

    from labeler import admin, annotate, api, auth, errors, ratelimit, security

    errors.init_app(app)
    security.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(annotate.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    ratelimit.init_app(app)
    return app
