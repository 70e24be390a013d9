"""Projects: create one with validated settings, find one (`find_project`, the one lookup), count its progress.

Shared by the CLI (`labeler projects create`), the API (POST /api/v1/projects) and the admin pages.
"""

from __future__ import annotations

import re

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from labeler.errors import LabelerError
from labeler.models import Annotation, Assignment, Project, Task, utcnow

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")  # names appear in URLs: /api/v1/projects/<name>


def check_int(value, field: str, low: int, high: int | None = None) -> int:
    # bool is an int subclass in Python; `true` for k would otherwise pass as 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise LabelerError(f"{field} must be an integer, got {value!r}", status=422, field=field)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise LabelerError(f"{field} must be {bound}, got {value}", status=422, field=field)
    return value


def create_project(session: Session, name: str, k: int = 2, overlap: int = 1, criteria=(), guidelines: str = "",
                   lease_seconds: int = 900, allow_edit: bool = True, ask_rationale: bool = True) -> Project:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise LabelerError(f"project name {name!r} must be 1-120 letters, digits, '.', '_' or '-' (it appears in URLs)",
                           status=422, field="name")
    check_int(k, "k", 2, 20)
    check_int(overlap, "overlap", 1, 1000)
    check_int(lease_seconds, "lease_seconds", 10)
    if isinstance(criteria, str) or not all(isinstance(c, str) and c.strip() for c in criteria):
        raise LabelerError("criteria must be a list of non-empty names", status=422, field="criteria")
    criteria = [c.strip() for c in criteria]
    if len(set(criteria)) != len(criteria):
        raise LabelerError(f"criteria has a duplicate name: {criteria}", status=422, field="criteria")
    if not isinstance(guidelines, str):
        raise LabelerError("guidelines must be text (Markdown)", status=422, field="guidelines")
    for field, value in (("allow_edit", allow_edit), ("ask_rationale", ask_rationale)):
        if not isinstance(value, bool):
            raise LabelerError(f"{field} must be true or false", status=422, field=field)
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise LabelerError(f"project '{name}' already exists", status=409, field="name")
    project = Project(name=name, k=k, overlap=overlap, criteria=criteria, guidelines=guidelines,
                      lease_seconds=lease_seconds, allow_edit=allow_edit, ask_rationale=ask_rationale)
    session.add(project)
    session.flush()
    return project


def find_project(session: Session, project: Project | int | str) -> Project:
    """The one project lookup every view, the CLI and the export call: a Project from itself, its id or
    its name; a 404 LabelerError naming the project when there is none."""
    if isinstance(project, Project):
        return project
    if isinstance(project, int) and not isinstance(project, bool):
        found = session.get(Project, project)
    else:
        found = session.scalar(select(Project).where(Project.name == project))
    if found is None:
        raise LabelerError(f"project {project!r} does not exist", status=404, field="project")
    return found


def count_project(session: Session, project: Project) -> dict:
    """Whole-project progress: tasks, annotations, tasks that reached the overlap, leases in flight."""
    per_task = (
        select(Task.id, func.count(Annotation.id).label("n"))
        .outerjoin(Annotation, Annotation.task_id == Task.id)
        .where(Task.project_id == project.id)
        .group_by(Task.id)
        .subquery()
    )
    tasks, complete = session.execute(
        select(func.count(), func.coalesce(func.sum(case((per_task.c.n >= project.overlap, 1), else_=0)), 0))
        .select_from(per_task)
    ).one()
    annotations = session.scalar(
        select(func.count(Annotation.id)).join(Task, Task.id == Annotation.task_id).where(Task.project_id == project.id)
    )
    in_flight = session.scalar(
        select(func.count(Assignment.id)).join(Task, Task.id == Assignment.task_id)
        .where(Task.project_id == project.id, Assignment.status == "active", Assignment.expires_at > utcnow())
    )
    gold = session.scalar(select(func.count(Task.id)).where(Task.project_id == project.id, Task.is_gold.is_(True)))
    return {
        "tasks": int(tasks),
        "gold_tasks": int(gold or 0),
        "tasks_complete": int(complete or 0),
        "annotations": int(annotations or 0),
        "annotations_needed": int(tasks) * project.overlap,
        "leases_in_flight": int(in_flight or 0),
    }


def project_json(project: Project) -> dict:
    return {
        "id": project.id,
        "name": project.name,
        "k": project.k,
        "overlap": project.overlap,
        "criteria": list(project.criteria or []),
        "guidelines": project.guidelines,
        "lease_seconds": project.lease_seconds,
        "allow_edit": project.allow_edit,
        "ask_rationale": project.ask_rationale,
        "created_at": project.created_at.isoformat() + "Z" if project.created_at else None,
    }
