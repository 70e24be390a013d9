"""Blueprint 'auth': log in and out with a username and password (hashed; see labeler.accounts).

Failed attempts are rate limited per account (LOGIN_RATE_LIMIT per minute, then 429; labeler.ratelimit), the
session is cleared on login (no session fixation), and deactivated users cannot log in. A password reset or a
deactivation ends the user's sessions (User.session_version; labeler.security.current_user).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for
from sqlalchemy import select

from labeler import accounts
from labeler.audit import record_event
from labeler.db import get_db
from labeler.models import User
from labeler.security import current_user, start_session

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Only same-site paths: a `next=https://evil.example` link must not turn login into an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("annotate.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if current_user() is not None:
            return redirect(safe_next(request.args.get("next")))
        return render_template("login.html", error=None, username="", next=request.args.get("next", ""))

    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    with get_db().read() as s:
        user = s.scalar(select(User).where(User.username == username))
    # One message for every failure: it must not tell an attacker which usernames exist.
    if user is None or not user.active or not accounts.check_password(user, password):
        reason = "unknown user" if user is None else "deactivated" if not user.active else "wrong password"
        with get_db().write() as s:  # the audit log says why; the page does not
            record_event(s, "login_failed", user, actor_name=username[:80], detail={"reason": reason})
        error = "Wrong username or password, or the account is deactivated."
        return render_template("login.html", error=error, username=username, next=request.form.get("next", "")), 401

    with get_db().write() as s:
        record_event(s, "login", user)
    start_session(user)
    return redirect(safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"))
