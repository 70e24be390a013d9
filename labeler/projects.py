"""Projects: create one with validated settings, edit one (`update_project`), find one (`find_project`, the
one lookup), count its progress.

Shared by the CLI (`labeler projects create`), the API (POST /api/v1/projects) and the admin pages.
"""

from __future__ import annotations

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from labeler.errors import LabelerError
from labeler.models import Annotation, Assignment, Project, Task, User, utcnow
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


EDITABLE = ("k", "kind", "overlap", "criteria", "guidelines", "lease_seconds", "allow_edit", "ask_rationale")
FIXED_ONCE_TASKS_EXIST = ("kind", "k")  # every stored task has k responses, and an arena's votes are pairs


def project_settings(project: Project) -> dict:
    return {"name": project.name, **{key: getattr(project, key) for key in EDITABLE}}


def update_project(session: Session, project: Project, **changes) -> dict:
    """Apply `changes` (validated with the whole project as labeler.schemas.ProjectIn); returns
    {field: [old, new]} for what changed. The name never changes (it is in URLs, exports and the loop's
    configs); k and kind do not once the project has tasks: 409 naming the field, nothing written."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise LabelerError(f"field '{unknown[0]}': cannot be edited (editable: {', '.join(EDITABLE)})", status=422, field=unknown[0])
    values = parse(ProjectIn, {**project_settings(project), **changes}).model_dump()
    changed = {key: [getattr(project, key), values[key]] for key in EDITABLE if getattr(project, key) != values[key]}
    n_tasks = session.scalar(select(func.count(Task.id)).where(Task.project_id == project.id))
    for key in FIXED_ONCE_TASKS_EXIST:
        if key in changed and n_tasks:
            raise LabelerError(f"field '{key}': project '{project.name}' has {n_tasks} tasks made for {key}={getattr(project, key)!r}, "
                               f"so {key} cannot change to {values[key]!r}; create a new project for that instead",
                               status=409, field=key)
    for key, (_old, new) in changed.items():
        setattr(project, key, new)
    session.flush()
    return changed


def get_or_create_project(session: Session, name: str, **settings) -> tuple[Project, bool]:
    """The project called `name`, created with `settings` when missing; (project, created).

    An existing project keeps its settings, but one whose K or kind differs from what the caller asks
    for cannot take its tasks: that is an error, not a silent mix.
    """
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        return create_project(session, name, **settings), True
    for key in ("k", "kind"):
        if key in settings and getattr(project, key) != settings[key]:
            raise LabelerError(f"project '{name}' exists with {key}={getattr(project, key)!r}, not {settings[key]!r}",
                               status=409, field=key)
    return project, False


PROJECT_BY_NAME = select(Project).where(Project.name == bindparam("name"))  # built once: every next and page runs it


def find_project(session: Session, project: Project | int | str) -> Project:
    """The one project lookup every view, the CLI and the export call: a Project from itself, its id or
    its name; a 404 LabelerError naming the project when there is none."""
    if isinstance(project, Project):
        return project
    if isinstance(project, int) and not isinstance(project, bool):
        found = session.get(Project, project)
    else:
        found = session.scalar(PROJECT_BY_NAME, {"name": project})
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


def annotations_by_annotator(session: Session, project: Project) -> dict[str, int]:
    """{username: annotations in this project}, for everyone who labelled at least one task."""
    rows = session.execute(
        select(User.username, func.count(Annotation.id))
        .join(Annotation, Annotation.user_id == User.id).join(Task, Task.id == Annotation.task_id)
        .where(Task.project_id == project.id).group_by(User.username).order_by(User.username)
    ).all()
    return {name: int(n) for name, n in rows}


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
        "kind": project.kind,
        "created_at": project.created_at.isoformat() + "Z" if project.created_at else None,
    }
