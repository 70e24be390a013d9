"""Rate limits (Flask-Limiter): failed logins per account, API calls per token.

  LOGIN_RATE_LIMIT   failed logins per minute for one account (default 10); once spent, even the right
                     password gets 429 until the minute is over. Keyed by account, not by address, so
                     guessing spread over many addresses is stopped too (the price: someone guessing can
                     lock an account out for a minute).
  API_RATE_LIMIT     calls per token (default "6000 per minute"), a Flask-Limiter limit string; an API
                     call without a token is counted per client address.
  RATE_LIMIT_STORAGE where the counters live (default memory://, one process). Several server workers
                     share limits through shared storage: redis://host:6379, memcached://host:11211
                     (Flask-Limiter's own backends, with their client packages installed), or
                     sqlite:///path/limits.db, a SQLite file on this machine that needs no server
                     (SqliteStorage below; `labeler serve` uses $TMPDIR/labeler-limits-UID-PORT.db by default).

When the counters' storage fails, requests are served without their limit and the error is logged
(RATELIMIT_SWALLOW_ERRORS, Flask-Limiter's setting, on by default here): labels matter more than limits.

The fixed-window strategy is used: one counter per key and window, which every backend supports, and one
storage round trip per check (the moving window keeps a timestamp per hit).

What a request costs (scripts/profile_labeler.py, docs/scaling.md): the API's limit is one hit on the
storage in a before_request hook (check_api_limit), through the Limiter's own strategy and storage; the
login limit is Flask-Limiter's decorator (only failed logins count, which its deduct_when does), and
Flask-Limiter's request hooks run for the auth blueprint's requests only (confine_to_blueprint). The
X-RateLimit-* headers are off: they cost two more storage reads on every answer. A 429 still carries
Retry-After, read from the storage only then.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from functools import partial

from flask import Flask, current_app, jsonify, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.storage import Storage
from werkzeug.exceptions import TooManyRequests

from labeler.errors import LabelerError


class SqliteStorage(Storage):
    """A `limits` storage in a SQLite file (`sqlite:///path`), so that server workers on one machine
    share their counters without a redis or memcached server. One UPSERT per hit, in WAL mode."""

    STORAGE_SCHEME = ["sqlite"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if not uri or not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ValueError(f"rate-limit storage {uri!r}: expected sqlite:///path/to/limits.db (four slashes for an absolute path)")
        self.path = uri[len("sqlite:///"):]
        self._local = threading.local()
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")  # counters are not worth an fsync; a crash loses a minute's counts
            # on every new connection: a file removed meanwhile (a $TMPDIR cleaner) comes back with its table
            conn.execute("CREATE TABLE IF NOT EXISTS counter (key TEXT PRIMARY KEY, hits INTEGER NOT NULL, expires_at REAL NOT NULL)")
            self._local.conn = conn
        return conn

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        row = self._connect().execute(
            "INSERT INTO counter (key, hits, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "hits = CASE WHEN expires_at <= ? THEN excluded.hits ELSE hits + excluded.hits END, "
            "expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at ELSE expires_at END RETURNING hits",
            (key, amount, now + expiry, now, now),
        ).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        row = self._connect().execute("SELECT hits FROM counter WHERE key = ? AND expires_at > ?", (key, time.time())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._connect().execute("SELECT expires_at FROM counter WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        try:
            self._connect().execute("SELECT 1")
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        return self._connect().execute("DELETE FROM counter").rowcount

    def clear(self, key: str) -> None:
        self._connect().execute("DELETE FROM counter WHERE key = ?", (key,))


def login_key() -> str:
    return "login:" + request.form.get("username", "").strip().lower()


def api_key() -> str:
    """The bearer token's hash (never the token itself) or, without one, the client's address."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return "addr:" + (get_remote_address() or "?")


def check_api_limit() -> None:
    """Spend one call of the caller's budget (API_RATE_LIMIT per token) on every API call but the OpenAPI
    document; 429 with Retry-After once it is spent.

    Runs before the token lookup, so a flood costs the database nothing. Flask-Limiter's own blueprint
    limit did the same through its generic resolution, on every request: the application, default,
    blueprint and decorated limits and their exemptions, the limit string parsed again, the key prefix,
    then the hit: about 180 Python calls per request more than this function (docs/scaling.md). Here the limit
    is parsed once (init_app) and hit through the Limiter's own strategy and storage (`Limiter.limiter`:
    the `limits` library that Flask-Limiter is built on)."""
    if request.blueprint != "api" or request.endpoint == "api.openapi":
        return
    limiter = current_app.extensions["labeler_limiter"]
    if not limiter.enabled:
        return
    limit, key = current_app.extensions["labeler_api_limit"], api_key()
    try:
        allowed = limiter.limiter.hit(limit, key, "api")
    except Exception as err:  # the counters' storage is down: RATELIMIT_SWALLOW_ERRORS, as Flask-Limiter's own limits
        if not current_app.config["RATELIMIT_SWALLOW_ERRORS"]:
            raise
        current_app.logger.warning("rate-limit storage %s failed (%s: %s); the API call is served without its limit",
                                   current_app.config["RATELIMIT_STORAGE_URI"], type(err).__name__, err)
        return
    if not allowed:
        reset_at = limiter.limiter.get_window_stats(limit, key, "api").reset_time
        raise TooManyRequests(str(limit), retry_after=max(1, int(reset_at - time.time()) + 1))


def seconds_to_reset() -> int:
    """Retry-After for a 429 of Flask-Limiter's login limit: until its window ends."""
    breached = current_app.extensions["labeler_limiter"].current_limit
    return max(1, breached.reset_at - int(time.time())) if breached is not None else 60


def too_many_requests(err):
    """429 with Retry-After: JSON under /api/, the login page with its message on /login."""
    retry = getattr(err, "retry_after", None) or seconds_to_reset()
    if request.path.startswith("/api/"):
        response = jsonify(error=f"rate limit exceeded ({err.description}); slow down and retry later", field="Authorization")
    elif request.endpoint == "auth.login":
        error = "Too many failed attempts for this account. Wait a minute and try again."
        response = current_app.make_response(render_template(
            "login.html", error=error, username=request.form.get("username", ""), next=request.form.get("next", "")))
    else:
        return err
    response.status_code = 429
    response.headers["Retry-After"] = str(retry)
    return response


def confine_to_blueprint(app: Flask, limiter: Limiter, blueprint: str) -> None:
    """Run the Limiter's per-request hooks (its limit check before the view, the conditional deduction
    after it, the release of its request context) only for `blueprint`'s requests, not app-wide.

    The only limit Flask-Limiter enforces here is the login view's (no default or application limits are
    configured; the API's is check_api_limit's), so on every other request those three hooks found nothing
    to do, at about 60 Python calls a request (scripts/profile_labeler.py). They are moved from the app's
    scope (None) to the blueprint's in Flask's hook registries, where Flask runs them for that blueprint's
    requests only, in the same order."""

    def ours(fn) -> bool:
        return getattr(fn, "__self__", None) is limiter or (isinstance(fn, partial) and limiter in fn.args)

    registries = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
    found = [[fn for fn in registry.get(None, []) if ours(fn)] for registry in registries]
    if any(len(hooks) != 1 for hooks in found):  # a Flask-Limiter that hooks in some other way: leave it app-wide
        return
    for registry, (hook,) in zip(registries, found):
        registry[None].remove(hook)
        registry.setdefault(blueprint, []).append(hook)


def init_app(app: Flask) -> Limiter:
    """One Limiter per app (tests make many apps; counters must not leak between them)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("RATE_LIMIT_STORAGE") or "memory://")
    app.config.setdefault("RATELIMIT_STRATEGY", "fixed-window")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # two storage reads per answer (the docstring)
    # a counter store that fails (a redis that is down, a limits file that cannot be opened) must not turn
    # every login into a 500: Flask-Limiter logs the error and lets the request through; so does the API's check
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter = Limiter(key_func=get_remote_address, app=app)
    login_per_minute = int(app.config.get("LOGIN_RATE_LIMIT", 10))
    # only failed logins count (deduct_when), but every POST is checked first: a blocked account is blocked
    failed = limiter.limit(f"{login_per_minute} per minute", key_func=login_key, methods=["POST"],
                           deduct_when=lambda response: response.status_code == 401)
    app.view_functions["auth.login"] = failed(app.view_functions["auth.login"])
    api_limit = app.config.get("API_RATE_LIMIT") or "6000 per minute"
    try:
        app.extensions["labeler_api_limit"] = parse(api_limit)
    except ValueError as err:  # at start-up: Flask-Limiter's own limits only log a bad string, per request
        raise LabelerError(f"LABELER_API_RATE_LIMIT {api_limit!r}: not a rate limit ({err}); write e.g. '6000 per minute'") from None
    limiter.request_filter(lambda: request.blueprint == "api")  # the API's limit is check_api_limit's
    confine_to_blueprint(app, limiter, "auth")
    app.before_request(check_api_limit)
    app.register_error_handler(429, too_many_requests)
    app.extensions["labeler_limiter"] = limiter
    return limiter

