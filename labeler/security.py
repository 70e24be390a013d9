"""Security for the browser side: CSRF tokens, security headers (CSP), and the `current_user` /
`login_required` / `admin_required` helpers the blueprints share. Rate limits: labeler.ratelimit.

CSRF: one random token per session; forms carry it in a hidden `csrf_token` field and fetch() sends it
in the `X-CSRF-Token` header. API calls with `Authorization: Bearer` are exempt: they carry no cookies,
so a forged cross-site request cannot use them.
"""

from __future__ import annotations

import functools
import hmac
import secrets

from flask import Flask, abort, g, jsonify, redirect, request, session, url_for

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class CsrfError(Exception):
    pass


def csrf_token() -> str:
    """The session's CSRF token, created on first use (templates call this for the hidden field)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def wants_json() -> bool:
    return request.blueprint == "api" or request.is_json or "application/json" in request.headers.get("Accept", "")


def check_csrf() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    if request.blueprint == "api" or request.path.startswith("/api/"):
        return  # the API authenticates by Bearer token only and reads no cookies: nothing to forge
    expected = session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfError()


def handle_csrf_error(_err):
    message = ("CSRF token missing or invalid: reload the page and submit again "
               f"(forms send the hidden '{CSRF_FIELD}' field, scripts the '{CSRF_HEADER}' header)")
    if wants_json():
        return jsonify(error=message, field=CSRF_FIELD), 400
    return f"<!doctype html><title>400 Bad Request</title><h1>Bad request</h1><p>{message}</p>", 400


def set_security_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "static":
        # Pages show annotators' work and CSRF tokens: keep them out of shared caches.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def start_session(user) -> None:
    """Log `user` in on this browser: a fresh session (no fixation) that holds the user's session_version."""
    session.clear()
    session["user_id"] = user.id
    session["session_version"] = user.session_version


def current_user():
    """The logged-in, active User of this request, or None: a session ends when its user is deactivated or
    their session_version moved on since it logged in (a password reset; labeler.accounts.end_sessions).
    The cookie is signed, so a client cannot raise the version it holds."""
    if "labeler_user" not in g:
        g.labeler_user = None
        user_id = session.get("user_id")
        if user_id is not None:
            from labeler.db import get_db
            from labeler.models import User

            with get_db().read() as s:
                user = s.get(User, user_id)
            if user is not None and user.active and session.get("session_version") == user.session_version:
                g.labeler_user = user
            else:
                session.clear()  # the browser drops the ended session's cookie
    return g.labeler_user


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            if wants_json():
                return jsonify(error="login required"), 401
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def admin_required(view):
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if current_user().role != "admin":
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def init_app(app: Flask) -> None:
    app.before_request(check_csrf)
    app.register_error_handler(CsrfError, handle_csrf_error)
    app.after_request(set_security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_user=current_user)
