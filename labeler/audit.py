"""The audit log: logins and failed logins, user and token changes, projects created or edited, tasks
uploaded, exports made and downloaded; each with its actor, time, source (web, api, cli), address and detail.

`record_event` takes the session of the change it records, so the change and its row commit together
(or neither does). The admin reads the log at /admin/audit.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labeler.models import AUDIT_ACTIONS, AuditEvent, User

ACTION_LABELS = {
    "login": "logged in",
    "login_failed": "failed to log in",
    "user_created": "added a user",
    "user_deactivated": "deactivated a user",
    "user_reactivated": "reactivated a user",
    "password_reset": "reset a password",
    "token_created": "created an API token",
    "token_revoked": "revoked an API token",
    "project_created": "created a project",
    "project_updated": "edited a project",
    "tasks_uploaded": "uploaded tasks",
    "export_created": "exported",
    "export_downloaded": "downloaded an export",
}
assert set(ACTION_LABELS) == set(AUDIT_ACTIONS)


def request_origin() -> tuple[str, str]:
    """(source, ip) of the current request; ("cli", "") outside one."""
    from flask import has_request_context, request

    if not has_request_context():
        return "cli", ""
    return ("api" if request.blueprint == "api" else "web"), (request.remote_addr or "")[:64]


def record_event(session: Session, action: str, actor: User | None = None, target: str = "", detail: dict | None = None,
                 actor_name: str | None = None) -> AuditEvent:
    """Add one audit row in `session`'s transaction. `actor_name` names an actor with no account (the
    username typed at a failed login); by default it is `actor`'s username."""
    if action not in ACTION_LABELS:
        raise ValueError(f"unknown audit action {action!r}")  # a programming error, not a user's
    source, ip = request_origin()
    name = actor_name if actor_name is not None else (actor.username if actor is not None else "")
    event = AuditEvent(action=action, actor_id=actor.id if actor is not None else None, actor=name[:80], source=source,
                       ip=ip, target=target[:255], detail=detail or {})
    session.add(event)
    session.flush()
    return event


def project_detail(settings: dict) -> dict:
    """A project's settings (or {field: [old, new]} changes) for an audit row: the guidelines by their length,
    not their text (up to 100,000 characters)."""
    detail = dict(settings)
    if "guidelines" in detail:
        value = detail["guidelines"]
        detail["guidelines"] = [f"{len(v)} characters" for v in value] if isinstance(value, list) else f"{len(value)} characters"
    return detail


def list_events(session: Session, page: int, per_page: int, action: str | None = None) -> tuple[list[AuditEvent], int]:
    """One page of events, newest first, and how many there are in all (of `action`, when given)."""
    where = [AuditEvent.action == action] if action else []
    total = session.scalar(select(func.count(AuditEvent.id)).where(*where))
    rows = session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id.desc())
                           .offset((page - 1) * per_page).limit(per_page)).all()
    return list(rows), int(total or 0)
