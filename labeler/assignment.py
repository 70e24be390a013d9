"""Assignment: who labels what next, under leases, so that no task gets more than `overlap` annotations.

A task's load is its completed annotations plus its unexpired active leases. `next_task` leases the
least-loaded task below the overlap that the annotator has not done (oldest first on ties); asked
again while the annotator holds a lease, it renews that lease and returns the same task. Both
functions read then write, so they must run inside `db.write()`: on SQLite that transaction holds the
write lock from its first statement (BEGIN IMMEDIATE), which serialises concurrent annotators and makes
the load count and the lease one atomic step.

The load is kept, not counted: `Task.taken` is the number of annotations plus leases with status
"active", changed in the same transaction as every lease, reclaim and submission (`change_taken`).
Expired leases are reclaimed (status "expired", taken - 1) at the start of each `next_task`, through the
(status, expires_at) index, so that by the time a task is chosen `taken` is the load. Choosing is then one
read of the index (project_id, taken, id): its cost does not grow with the queue (scripts/bench_labeler.py
measures 1,000 against 100,000 tasks), where counting every task's annotations and leases did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter
from typing import NamedTuple

from sqlalchemy import String, bindparam, cast, exists, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from labeler.errors import LabelerError
from labeler.models import Annotation, Assignment, Project, Response, Task, User, utcnow
from labeler.schemas import MAX_LEASE_SECONDS, AnnotationIn, parse


def lease_seconds_for(project: Project) -> int:
    """The app's LEASE_SECONDS when set (> 0), else the project's own; never beyond MAX_LEASE_SECONDS, so
    that a row written before that bound existed cannot push an expiry past what a datetime holds."""
    try:
        from flask import current_app, has_app_context

        if has_app_context() and int(current_app.config.get("LEASE_SECONDS") or 0) > 0:
            return min(int(current_app.config["LEASE_SECONDS"]), MAX_LEASE_SECONDS)
    except ImportError:  # plain-Python callers without Flask
        pass
    return min(project.lease_seconds, MAX_LEASE_SECONDS)


def shuffled_order(task_id: int, user_id: int, ids: list[int]) -> list[int]:
    """The task's response ids (`ids`, in position order) in a per-annotator order: seeded by (task, user),
    so it is reproducible."""
    ids = list(ids)
    seed = int.from_bytes(hashlib.sha256(f"{task_id}:{user_id}".encode()).digest()[:8], "big")
    random.Random(seed).shuffle(ids)
    return ids


def lock_project(session: Session, project_id: int) -> None:
    """Serialise assignment per project on servers without BEGIN IMMEDIATE (PostgreSQL: SELECT ... FOR
    UPDATE on the project row). On SQLite the transaction already holds the database's write lock (BEGIN
    IMMEDIATE), and SQLite has no FOR UPDATE: no statement at all."""
    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(Project.id).where(Project.id == project_id).with_for_update())


_task, _project = Task.__table__, Project.__table__
ADD_TAKEN = (update(_task).where(_task.c.id == bindparam("task_id")).values(taken=_task.c.taken + bindparam("delta"))
             .returning(_task.c.taken))
CLOSE_TASKS = (update(_project).where(_project.c.id == bindparam("project_id"))
               .values(open_tasks=_project.c.open_tasks - bindparam("closed")))


def change_taken(session: Session, project: Project, task_id: int, delta: int) -> None:
    """Task.taken += delta, in SQL (the write transaction holds the row; no lost update), and
    Project.open_tasks -/+ 1 when the task fills up or opens again.

    Core statements on the tables, not ORM-enabled UPDATEs: those cost ~4 ms of Python each here, inside
    the write lock (bench_labeler.py's profile); no loaded object reads these two columns afterwards."""
    after = session.execute(ADD_TAKEN, {"task_id": task_id, "delta": delta}).scalar_one()
    closed = int(after - delta < project.overlap) - int(after < project.overlap)  # +1: filled up; -1: open again
    if closed:
        session.execute(CLOSE_TASKS, {"project_id": project.id, "closed": closed})


def recount_open_tasks(session: Session, project: Project) -> int:
    """Count Project.open_tasks afresh (after a change of overlap, or rows inserted around the ORM)."""
    count = session.scalar(select(func.count(Task.id)).where(Task.project_id == project.id, Task.taken < project.overlap))
    session.execute(update(Project).where(Project.id == project.id).values(open_tasks=count).execution_options(synchronize_session=False))
    return int(count)


# The statements of next_task and submit_annotation, built once with their values as parameters: building
# a statement and its cache key anew on every request cost more Python than running it (the profile in
# docs/scaling.md). next_task's are Core statements on the tables, read as plain rows and written without the
# unit of work: loading Task and Assignment objects and flushing them was most of its Python (profile_labeler).
_assignment, _annotation, _response = Assignment.__table__, Annotation.__table__, Response.__table__
EXPIRED_LEASES = (select(_assignment.c.id, _assignment.c.task_id).join(_task, _task.c.id == _assignment.c.task_id)
                  .where(_assignment.c.status == "active", _assignment.c.expires_at <= bindparam("now"),
                         _task.c.project_id == bindparam("project_id")))
NOT_ANNOTATED = ~exists().where(_annotation.c.task_id == _task.c.id, _annotation.c.user_id == bindparam("user_id"))
# the lease the annotator holds in the project (renewed when they ask again), with its task's id and meta
HELD_LEASE = (select(_task.c.id, _task.c.meta, _assignment.c.id.label("lease_id"), _assignment.c.display_order)
              .join(_assignment, _assignment.c.task_id == _task.c.id)
              .where(_task.c.project_id == bindparam("project_id"), _assignment.c.user_id == bindparam("user_id"),
                     _assignment.c.status == "active", _assignment.c.expires_at > bindparam("now"), NOT_ANNOTATED)
              .order_by(_assignment.c.leased_at, _task.c.id).limit(1))
# A task's response ids in one text column of the row that reads the task, so that no second statement loads
# them: "position:id" pairs joined by commas (string_agg / group_concat; response_ids_of parses them). The
# aggregate's own order is unspecified, hence the positions.
RESPONSE_KEYS = (select(func.aggregate_strings(cast(_response.c.position, String) + literal_column("':'")
                                               + cast(_response.c.id, String), ","))
                 .where(_response.c.task_id == _task.c.id).scalar_subquery().label("response_keys"))


def response_ids_of(keys: str | None) -> list[int]:
    """The response ids in RESPONSE_KEYS's text, in position order."""
    pairs = sorted(tuple(map(int, key.split(":"))) for key in keys.split(",")) if keys else []
    return [rid for _position, rid in pairs]


# the least-taken open task the annotator has not done, read from ix_task_queue in order, with the
# annotator's earlier (expired) lease on it if any, and its response ids (for a first lease's display order)
NEXT_OPEN_TASK = (select(_task.c.id, _task.c.meta, _assignment.c.id.label("lease_id"), _assignment.c.status,
                         _assignment.c.display_order, RESPONSE_KEYS)
                  .select_from(_task.outerjoin(_assignment, (_assignment.c.task_id == _task.c.id)
                                               & (_assignment.c.user_id == bindparam("user_id"))))
                  .where(_task.c.project_id == bindparam("project_id"), _task.c.taken < bindparam("overlap"), NOT_ANNOTATED)
                  .order_by(_task.c.taken, _task.c.id).limit(1))
NEW_LEASE = insert(_assignment)  # a first lease; nothing reads its id
RENEW_LEASE = update(_assignment).where(_assignment.c.id == bindparam("lease_id")).values(expires_at=bindparam("expires"))
RETAKE_LEASE = (update(_assignment).where(_assignment.c.id == bindparam("lease_id"))
                .values(status="active", leased_at=bindparam("now"), expires_at=bindparam("expires")))


class StoredAnnotation(NamedTuple):
    """An annotation as submit_annotation read or wrote it: Annotation's columns as a plain row (api.annotation_json)."""
    id: int
    task_id: int
    user_id: int
    version: int
    ranking: dict
    all_bad: bool
    scores: dict
    rationale: str
    edited_response: str | None
    display_order: list
    seconds_spent: float
    created_at: dt.datetime
    updated_at: dt.datetime


class SubmissionProject(NamedTuple):
    """What a submission reads of its task's project (validate_payload, change_taken)."""
    id: int
    name: str
    overlap: int
    criteria: list
    allow_edit: bool


# A submission's annotation of the annotator (StoredAnnotation's columns first, all None when there is none),
# their lease on the task, the task's project, and the task's response ids, in one read of plain rows; a row
# only when the task exists. Like next_task's, these are Core statements: loading four objects and flushing
# the changed ones was most of a submission's Python (profile_labeler).
_LEASE_COLUMNS = (_assignment.c.id.label("lease_id"), _assignment.c.status.label("lease_status"),
                  _assignment.c.expires_at.label("lease_expires_at"), _assignment.c.display_order.label("lease_order"))
SUBMISSION_ROWS = (select(*(_annotation.c[name] for name in StoredAnnotation._fields), *_LEASE_COLUMNS,
                          *(_project.c[name].label(f"project_{name}") for name in SubmissionProject._fields), RESPONSE_KEYS)
                   .select_from(_task.join(_project, _project.c.id == _task.c.project_id)
                                .outerjoin(_assignment, (_assignment.c.task_id == _task.c.id) & (_assignment.c.user_id == bindparam("user_id")))
                                .outerjoin(_annotation, (_annotation.c.task_id == _task.c.id) & (_annotation.c.user_id == bindparam("user_id"))))
                   .where(_task.c.id == bindparam("task_id")))
SUBMISSION_ANNOTATION = slice(0, len(StoredAnnotation._fields))  # where each part sits in the row
_PROJECT_START = SUBMISSION_ANNOTATION.stop + len(_LEASE_COLUMNS)
SUBMISSION_PROJECT = slice(_PROJECT_START, _PROJECT_START + len(SubmissionProject._fields))
NEW_ANNOTATION = insert(_annotation).returning(_annotation.c.id)
# a change: the new values (parameters named as the columns) and version + 1; submit_annotation holds the lock
CHANGE_ANNOTATION = (update(_annotation).where(_annotation.c.id == bindparam("annotation_id"))
                     .values(version=_annotation.c.version + 1))
FINISH_LEASE = update(_assignment).where(_assignment.c.id == bindparam("lease_id")).values(status="done")
LOCK_TASK_PROJECT = (select(Project.id).join(Task, Task.project_id == Project.id).where(Task.id == bindparam("task_id"))
                     .with_for_update(of=Project))


def reclaim_expired(session: Session, project: Project, now: dt.datetime) -> int:
    """Leases past their expiry go back to the pool: status "expired", their tasks' taken - 1."""
    expired = session.execute(EXPIRED_LEASES, {"now": now, "project_id": project.id}).all()
    if not expired:
        return 0
    table = Assignment.__table__
    session.execute(update(table).where(table.c.id.in_([row.id for row in expired])).values(status="expired"))
    for task_id, count in Counter(row.task_id for row in expired).items():
        change_taken(session, project, task_id, -count)
    session.expire_all()  # objects loaded before this point may hold the old status/taken
    return len(expired)


def task_load(now: dt.datetime, exclude_user_id: int | None = None):
    """SQL expression: completed annotations + unexpired active leases (optionally not counting one user's)."""
    done = select(func.count(Annotation.id)).where(Annotation.task_id == Task.id).scalar_subquery()
    lease_filter = [Assignment.task_id == Task.id, Assignment.status == "active", Assignment.expires_at > now]
    if exclude_user_id is not None:
        lease_filter.append(Assignment.user_id != exclude_user_id)
    leased = select(func.count(Assignment.id)).where(*lease_filter).scalar_subquery()
    return done + leased


class LeasedTask(NamedTuple):
    """next_task's task: its id and meta (what api.task_json shows besides its prompt and responses)."""
    id: int
    meta: dict


class Lease(NamedTuple):
    """next_task's lease: the task's response ids in this annotator's order, and when the lease ends."""
    display_order: list
    expires_at: dt.datetime


def next_task(session: Session, project: Project, user: User, now: dt.datetime | None = None,
              lease_seconds: int | None = None) -> tuple[LeasedTask, Lease] | None:
    """The task this annotator should label now, leased to them; None when nothing is left for them."""
    now = now or utcnow()
    lock_project(session, project.id)
    reclaim_expired(session, project, now)
    expires = now + dt.timedelta(seconds=lease_seconds or lease_seconds_for(project))
    held = session.execute(HELD_LEASE, {"project_id": project.id, "user_id": user.id, "now": now}).first()
    if held is not None:  # asking again renews the lease the annotator holds (README, OpenAPI)
        session.execute(RENEW_LEASE, {"lease_id": held.lease_id, "expires": expires})
        return LeasedTask(held.id, held.meta), Lease(held.display_order, expires)
    found = session.execute(NEXT_OPEN_TASK, {"project_id": project.id, "user_id": user.id, "overlap": project.overlap}).first()
    if found is None:
        return None
    if found.lease_id is None:  # first visit: the display order is drawn once and kept for good
        order = shuffled_order(found.id, user.id, response_ids_of(found.response_keys))
        session.execute(NEW_LEASE, {"task_id": found.id, "user_id": user.id, "status": "active", "display_order": order,
                                    "leased_at": now, "expires_at": expires})
    else:  # the annotator's earlier lease on the task, taken up again
        order = found.display_order
        session.execute(RETAKE_LEASE, {"lease_id": found.lease_id, "now": now, "expires": expires})
    if found.status != "active":  # a first lease (no status), or an expired one taken up again: a new slot
        change_taken(session, project, found.id, +1)
    return LeasedTask(found.id, found.meta), Lease(order, expires)


def validate_payload(payload, task_id: int, project: Project | SubmissionProject, response_ids: list[int]) -> dict:
    """An annotation payload (labeler.schemas.AnnotationIn), checked against the task's responses (their ids)
    and the project's criteria. Returns the values to store plus "version" (None when the client sent none)."""

    def fail(field: str, message: str):
        raise LabelerError(f"field '{field}': {message}", status=422, field=field)

    values = parse(AnnotationIn, payload).model_dump()
    ids = {str(rid) for rid in response_ids}
    n = len(ids)
    ranking = values["ranking"]
    if ranking is None:
        if not values["all_bad"]:
            fail("ranking", "required unless all_bad is true: an object {response_id: rank} (1 = best, equal ranks for ties)")
        ranking = {rid: 1 for rid in ids}  # "all bad" without an order: every response tied
    missing, extra = sorted(ids - set(ranking)), sorted(set(ranking) - ids)
    if extra:
        fail(f"ranking.{extra[0]}", f"response {extra[0]} is not part of task {task_id} (its responses: {sorted(ids, key=int)})")
    if missing:
        fail("ranking", f"every response must be ranked exactly once; missing {missing}")
    for rid, rank in ranking.items():
        if rank > n:
            fail(f"ranking.{rid}", f"rank must be an integer from 1 to {n}, got {rank}")
    for criterion, per_response in values["scores"].items():
        if criterion not in (project.criteria or []):
            fail(f"scores.{criterion}", f"not a criterion of project '{project.name}' (criteria: {project.criteria})")
        for rid in per_response:
            if rid not in ids:
                fail(f"scores.{criterion}.{rid}", f"response {rid} is not part of task {task_id}")
    edited = values["edited_response"]
    edited = edited if edited and edited.strip() else None
    if edited is not None and not project.allow_edit:
        fail("edited_response", f"project '{project.name}' does not take edited responses")
    return values | {"ranking": ranking, "edited_response": edited}


def submit_annotation(session: Session, task_id: int, user: User, payload: dict,
                      now: dt.datetime | None = None) -> tuple[StoredAnnotation, bool]:
    """Store this annotator's label for a task; returns (annotation, created).

    A first submission needs the annotator's lease: if it expired and others have since filled the
    overlap, it is refused with 409 and nothing is written. Changing the annotation afterwards (going
    back, an edit from the history) must name the version it replaces (`version`); a request without
    it, or with an older one, is refused with 409 and writes nothing, so a delayed or retried request
    never overwrites a newer label. A request that repeats exactly what is stored (a retry, a double
    click) is answered with the stored annotation and writes nothing.
    """
    now = now or utcnow()
    if session.get_bind().dialect.name != "sqlite":  # lock_project, before the reads below (see lock_project)
        session.execute(LOCK_TASK_PROJECT, {"task_id": task_id})
    row = session.execute(SUBMISSION_ROWS, {"task_id": task_id, "user_id": user.id}).first()
    if row is None:
        raise LabelerError(f"field 'task_id': task {task_id} does not exist", status=404, field="task_id")
    annotation = StoredAnnotation(*row[SUBMISSION_ANNOTATION]) if row.id is not None else None
    project = SubmissionProject(*row[SUBMISSION_PROJECT])
    values = validate_payload(payload, task_id, project, response_ids_of(row.response_keys))
    version = values.pop("version")
    if annotation is not None:
        if all(getattr(annotation, key) == value for key, value in values.items()):
            return annotation, False  # a retry of what is stored: nothing to write
        if version is None:
            raise LabelerError(f"task {task_id} already has your annotation {annotation.id} (version {annotation.version}); "
                               f"to change it, send \"version\": {annotation.version}", status=409, field="version")
        if version != annotation.version:
            raise LabelerError(f"annotation {annotation.id} is at version {annotation.version}, not {version}: it changed "
                               "since you read it; read it again before changing it", status=409, field="version")
        session.execute(CHANGE_ANNOTATION, {"annotation_id": annotation.id, **values, "updated_at": now})
        if row.lease_id is not None and row.lease_status != "done":
            if row.lease_status == "active":  # a lease beside the annotation would count twice
                change_taken(session, project, task_id, -1)
            session.execute(FINISH_LEASE, {"lease_id": row.lease_id})
        return annotation._replace(**values, version=annotation.version + 1, updated_at=now), False
    if version is not None:
        raise LabelerError(f"task {task_id} has no annotation of yours to update (you sent version {version}); "
                           "leave version out to make one", status=409, field="version")
    if row.lease_id is None:
        raise LabelerError(f"task {task_id} is not assigned to you: fetch it with GET /api/v1/projects/{project.name}/next",
                           status=409, field="task_id")
    lease_alive = row.lease_status == "active" and row.lease_expires_at > now
    if not lease_alive:
        others = session.scalar(select(task_load(now, exclude_user_id=user.id)).where(Task.id == task_id))
        if others >= project.overlap:
            raise LabelerError(f"your lease on task {task_id} expired and other annotators have completed it; "
                               "fetch the next task", status=409, field="task_id")
    stored = {"task_id": task_id, "user_id": user.id, "version": 1, "display_order": list(row.lease_order),
              "created_at": now, "updated_at": now, **values}
    annotation_id = session.execute(NEW_ANNOTATION, stored).scalar_one()
    if row.lease_status != "active":  # an active lease's slot becomes the annotation's; otherwise a new slot
        change_taken(session, project, task_id, +1)
    session.execute(FINISH_LEASE, {"lease_id": row.lease_id})
    return StoredAnnotation(id=annotation_id, **stored), True


def _progress_statement():
    """progress()'s one SELECT, built once: the annotator's own rows and the project's kept open count, with
    the ids, the overlap and the time as parameters (four round trips and their Python were ~1 ms a `next`)."""
    project_id, user_id, overlap = bindparam("project_id"), bindparam("user_id"), bindparam("overlap")

    def taken_of(row):  # per row of this annotator's own (indexed by user_id), never a scan of the tasks
        return select(Task.taken).where(Task.id == row.task_id, Task.project_id == project_id).scalar_subquery()

    open_tasks = select(Project.open_tasks).where(Project.id == project_id).scalar_subquery()
    open_done = (select(func.count(Annotation.id))
                 .where(Annotation.user_id == user_id, taken_of(Annotation) < overlap).scalar_subquery())
    held_full = (select(func.count(Assignment.id))
                 .where(Assignment.user_id == user_id, Assignment.status == "active", Assignment.expires_at > bindparam("now"),
                        taken_of(Assignment) >= overlap).scalar_subquery())
    return (select(func.count(Annotation.id), func.coalesce(func.sum(Annotation.seconds_spent), 0.0),
                   open_tasks, open_done, held_full)
            .select_from(Annotation).join(Task, Task.id == Annotation.task_id)
            .where(Task.project_id == project_id, Annotation.user_id == user_id))


PROGRESS = _progress_statement()


def progress(session: Session, project: Project, user: User) -> dict:
    """done: this annotator's annotations; remaining: tasks still open to them (open tasks they have not
    annotated, plus any they hold that are otherwise full); seconds: time recorded.

    Read from Project.open_tasks and this annotator's own rows, never by counting every task's load.
    """
    done, seconds, open_tasks, open_done, held_full = session.execute(
        PROGRESS, {"project_id": project.id, "user_id": user.id, "overlap": project.overlap, "now": utcnow()}).one()
    remaining = int(open_tasks or 0) - int(open_done or 0) + int(held_full or 0)
    return {"done": int(done), "remaining": remaining, "seconds": float(seconds)}


def previous_annotations(session: Session, project: Project, user: User, limit: int = 10) -> list[Annotation]:
    """This annotator's latest annotations in the project, newest first (the "go back" list)."""
    return list(session.scalars(
        select(Annotation).join(Task, Task.id == Annotation.task_id)
        .where(Task.project_id == project.id, Annotation.user_id == user.id)
        .order_by(Annotation.created_at.desc(), Annotation.id.desc())
        .limit(limit)
    ))
