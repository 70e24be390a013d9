"""Projects: create one with validated settings, find one (`find_project`, the one lookup), count its progress.

Shared by the CLI (`labeler projects create`), the API (POST /api/v1/projects) and the admin pages.
"""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from labeler.errors import LabelerError
from labeler.models import Annotation, Assignment, Project, Task, utcnow
from labeler.schemas import ProjectIn, parse


def create_project(session: Session, name: str, **settings) -> Project:
    """A new project from validated settings (labeler.schemas.ProjectIn); 409 when the name is taken."""
    values = parse(ProjectIn, {"name": name, **settings}).model_dump()
    if session.scalar(select(Project).where(Project.name == values["name"])) is not None:
        raise LabelerError(f"project '{values['name']}' already exists", status=409, field="name")
    project = Project(**values)
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
        raise LabelerError(f"project {project!r:.130} does not exist", status=404, field="project")
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
