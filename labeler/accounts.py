"""Accounts: users with hashed passwords (werkzeug's scrypt) and API tokens; shared by the CLI and the admin pages.

A token is shown once, when it is made; the database keeps only its sha256, so a leaked database file
does not leak working tokens.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from labeler.errors import LabelerError
from labeler.models import ApiToken, User
from labeler.schemas import PasswordIn, TokenIn, UserIn, parse

TOKEN_PREFIX = "lbl_"  # makes a leaked token easy to recognise in logs and secret scanners


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def check_password(user: User | None, password: str) -> bool:
    return bool(user and user.active and password and check_password_hash(user.password_hash, password))


def create_user(session: Session, username: str, password: str, role: str = "annotator", simulated: bool = False) -> User:
    values = parse(UserIn, {"username": (username or "").strip(), "password": password, "role": role, "simulated": simulated})
    username = values.username
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise LabelerError(f"user '{username}' already exists", status=409, field="username")
    user = User(username=username, password_hash=hash_password(password), role=values.role, active=True, simulated=values.simulated)
    session.add(user)
    session.flush()
    return user


def get_or_create_user(session: Session, username: str, password: str, role: str = "annotator",
                       simulated: bool = False) -> tuple[User, bool]:
    """The user called `username`, created when missing; (user, created). An existing user keeps its password."""
    user = session.scalar(select(User).where(User.username == username))
    if user is not None:
        return user, False
    return create_user(session, username, password, role=role, simulated=simulated), True


def find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise LabelerError(f"user '{username}' does not exist", status=404, field="username")
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise LabelerError(f"field 'user_id': user {user_id} does not exist", status=404, field="user_id")
    return user


def end_sessions(session: Session, user: User) -> None:
    """End every browser session of `user`: each holds the session_version it logged in at, and
    labeler.security.current_user refuses one that is behind (in SQL: two concurrent resets both count)."""
    user.session_version = User.session_version + 1
    session.flush()
    session.refresh(user, ["session_version"])


def set_user_active(session: Session, user: User, active: bool) -> bool:
    """Deactivate (or reactivate) `user`: a deactivated user cannot log in, their sessions end (for good:
    reactivating does not bring them back) and their tokens stop working until reactivation; their
    annotations stay. Returns whether anything changed."""
    changed = user.active != active
    user.active = active
    if changed and not active:
        end_sessions(session, user)
    session.flush()
    return changed


def reset_password(session: Session, user: User, password: str) -> None:
    """A new password for `user`, and the end of their browser sessions: whoever held the old password (or a
    cookie made with it) is logged out at their next request. API tokens keep working, as with GitHub's and
    GitLab's personal access tokens: scripts hold them, the admin lists and revokes them one by one on the
    same page, and a reset for a forgotten password must not stop a labelling job (deactivation stops all)."""
    user.password_hash = hash_password(parse(PasswordIn, {"password": password}).password)
    end_sessions(session, user)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, user: User, name: str = "") -> str:
    """A new API token for `user`; the plain token is returned here and never stored."""
    name = parse(TokenIn, {"name": name}).name
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    session.flush()
    return token


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """`user`'s tokens, oldest first: names and dates only (the tokens themselves were shown once)."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Delete `user`'s token `token_id`: requests with it get 401 from now on. Returns the deleted row."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise LabelerError(f"field 'token_id': token {token_id} of user '{user.username}' does not exist (revoked already?)",
                           status=404, field="token_id")
    session.delete(row)
    session.flush()
    return row


# built once: every API request runs it (labeler.api.authenticate). What a request needs of its caller (id,
# username, role) as a plain row: no User object, no identity map (scripts/profile_labeler.py, docs/scaling.md).
USER_FOR_TOKEN = (select(User.id, User.username, User.role).join(ApiToken, ApiToken.user_id == User.id)
                  .where(ApiToken.token_hash == bindparam("token_hash"), User.active.is_(True)))


def user_for_token(session: Session, token: str):
    """(id, username, role) of the active user whose token this is, or None. Looked up on every request, not
    cached: a revoked token or a deactivated user is refused at the next request."""
    if not token:
        return None
    return session.connection().execute(USER_FOR_TOKEN, {"token_hash": hash_token(token)}).first()
