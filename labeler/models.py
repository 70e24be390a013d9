"""The data model: User, ApiToken, Project, Prompt, Task, Response, Assignment, Annotation, Export,
and AuditEvent (who did what, when: labeler.audit).

Rankings are stored as {response_id: rank} with 1 the best and equal ranks for ties, so that every pair
training sees traces back to annotation ids.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labeler.db import Base

ROLES = ("admin", "annotator")
PROJECT_KINDS = ("ranking", "arena")
# what the audit log records (labeler.audit names each in words)
AUDIT_ACTIONS = ("login", "login_failed", "user_created", "user_deactivated", "user_reactivated", "password_reset",
                 "token_created", "token_revoked", "project_created", "project_updated", "tasks_uploaded",
                 "export_created", "export_downloaded")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)  # simulated annotators are named as such
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # a browser session holds the version it logged in at; a password reset or a deactivation moves it on,
    # which ends every session made before (labeler.security.current_user). API tokens are not sessions.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the token itself is shown once
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    k: Mapped[int] = mapped_column(Integer, default=2)  # responses per task
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # annotators per task
    criteria: Mapped[list] = mapped_column(JSON, default=list)  # names of per-criterion scores (1-5)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    lease_seconds: Mapped[int] = mapped_column(Integer, default=900)
    allow_edit: Mapped[bool] = mapped_column(Boolean, default=True)
    ask_rationale: Mapped[bool] = mapped_column(Boolean, default=True)
    # "ranking": rank K responses; "arena": blind A/B votes between checkpoints (K = 2; labeler/arena.py)
    kind: Mapped[str] = mapped_column(String(16), default="ranking", server_default="ranking")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # tasks with taken < overlap, kept by labeler.assignment (and count_new_task below) so that an annotator's
    # "remaining" needs no count over every task; after changing overlap call assignment.recount_open_tasks
    open_tasks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Prompt(Base):
    __tablename__ = "prompt"
    __table_args__ = (UniqueConstraint("project_id", "prompt_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[Any] = mapped_column(JSON)  # str or [{"role", "content"}, ...]
    prompt_hash: Mapped[str] = mapped_column(String(64))
    # the prompt as plain text (a conversation's contents joined) for the admin's search: the JSON column
    # holds escaped text (non-ASCII as \uXXXX), which a LIKE cannot match
    text: Mapped[str] = mapped_column(Text, default="", server_default="")
    meta: Mapped[dict] = mapped_column(JSON, default=dict)


class Task(Base):
    __tablename__ = "task"
    # re-importing a file adds nothing; ix_task_queue lets next_task read the least-taken open task from an
    # index instead of counting every task's annotations and leases (labeler/assignment.py)
    __table_args__ = (UniqueConstraint("project_id", "content_hash"), Index("ix_task_queue", "project_id", "taken", "id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_ranking: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)  # {response_id: rank}
    source: Mapped[str] = mapped_column(String(255), default="")  # where the task came from: a file name or "api"
    # slots in use: annotations + leases with status "active"; kept by labeler.assignment (change_taken)
    taken: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    prompt: Mapped[Prompt] = relationship()
    responses: Mapped[list["Response"]] = relationship(order_by="Response.position", back_populates="task")


@event.listens_for(Task, "after_insert")
def count_new_task(_mapper, connection, task: Task) -> None:
    """Every task is inserted with taken = 0 below an overlap of at least 1: one more open task."""
    connection.execute(update(Project).where(Project.id == task.project_id).values(open_tasks=Project.open_tasks + 1))


class Response(Base):
    __tablename__ = "response"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the imported file
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(255), default="")
    meta: Mapped[dict] = mapped_column(JSON, default=dict)  # sampling params, model version, ...
    task: Mapped[Task] = relationship(back_populates="responses")


class Assignment(Base):
    """A lease: an annotator holds a task until `expires_at`; expired leases are reclaimed."""

    __tablename__ = "assignment"
    # ix_assignment_task_status: a task's in-flight leases; ix_assignment_expiry: the leases due for reclaiming
    __table_args__ = (UniqueConstraint("task_id", "user_id"), Index("ix_assignment_task_status", "task_id", "status", "expires_at"),
                      Index("ix_assignment_expiry", "status", "expires_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | done | expired
    display_order: Mapped[list] = mapped_column(JSON)  # response ids as shown to this annotator
    leased_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Annotation(Base):
    __tablename__ = "annotation"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)  # one per task and annotator
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    ranking: Mapped[dict] = mapped_column(JSON)  # {str(response_id): rank}, 1 = best, ties share a rank
    all_bad: Mapped[bool] = mapped_column(Boolean, default=False)
    scores: Mapped[dict] = mapped_column(JSON, default=dict)  # {criterion: {str(response_id): 1..5}}
    rationale: Mapped[str] = mapped_column(Text, default="")
    edited_response: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # a better response, written by hand
    display_order: Mapped[list] = mapped_column(JSON)  # response ids in the order shown
    seconds_spent: Mapped[float] = mapped_column(Float, default=0.0)
    # 1 when made, +1 per change; a change must name the version it replaces (labeler.assignment)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User] = relationship()
    task: Mapped[Task] = relationship()


class Export(Base):
    __tablename__ = "export"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """One thing someone did: a login (or a failed one), a user or token change, a project created or edited,
    tasks uploaded, an export made or downloaded. Rows are only ever added."""

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)  # one of AUDIT_ACTIONS
    actor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True, index=True)
    # the actor's username as it was (for a failed login: the name that was typed); "" from the command line
    actor: Mapped[str] = mapped_column(String(80), default="")
    source: Mapped[str] = mapped_column(String(8), default="web")  # web | api | cli
    ip: Mapped[str] = mapped_column(String(64), default="")
    target: Mapped[str] = mapped_column(String(255), default="")  # "project demo", "user ann", "export 3"
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
