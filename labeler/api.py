"""Blueprint 'api': the JSON API under /api/v1, described by /api/v1/openapi.json.

Every call but the OpenAPI document needs `Authorization: Bearer <token>` (tokens come from
`labeler users token NAME`). The API reads no cookies, so CSRF does not apply to it. Errors are JSON:
{"error": message, "field": name}. Views read then write inside `db.write()` (BEGIN IMMEDIATE on SQLite).
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, g, jsonify, request, send_file, url_for
from sqlalchemy import bindparam, select

from labeler import accounts, assignment, importer, projects
from labeler.audit import project_detail, record_event
from labeler.db import get_db
from labeler.errors import LabelerError
from labeler.models import Annotation, Project, Prompt, Response, Task, User
from labeler.schemas import ExportIn, ProjectIn, TasksIn, parse, read_json_body
from labeler.quality import project_quality

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def authenticate():
    if request.endpoint == "api.openapi":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise LabelerError("authentication required: send 'Authorization: Bearer <token>' "
                           "(make a token with `labeler users token USERNAME`)", status=401, field="Authorization")
    with get_db().lookup() as session:  # one SELECT: the caller's id, username and role as a plain row
        user = accounts.user_for_token(session, token.strip())
    if user is None:
        raise LabelerError("invalid token, or its user is deactivated", status=401, field="Authorization")
    g.api_user = user


def require_admin() -> None:
    if g.api_user.role != "admin":
        raise LabelerError("this call is for admins only", status=403, field="Authorization")


def iso(value) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def annotation_json(annotation: Annotation | assignment.StoredAnnotation) -> dict:  # an object, or submit_annotation's row
    return {
        "id": annotation.id,
        "task_id": annotation.task_id,
        "user_id": annotation.user_id,
        "version": annotation.version,
        "ranking": annotation.ranking,
        "all_bad": annotation.all_bad,
        "scores": annotation.scores,
        "rationale": annotation.rationale,
        "edited_response": annotation.edited_response,
        "display_order": annotation.display_order,
        "seconds_spent": annotation.seconds_spent,
        "created_at": iso(annotation.created_at),
        "updated_at": iso(annotation.updated_at),
    }


# what a task shows, for task_json: its prompt and responses in one read of plain rows (lazy loads of
# Task.prompt and Task.responses were two statements and ORM objects that nothing else reads)
TASK_CONTENT = (select(Prompt.prompt, Response.id, Response.text, Response.model).select_from(Task)
                .join(Prompt, Prompt.id == Task.prompt_id).outerjoin(Response, Response.task_id == Task.id)
                .where(Task.id == bindparam("task_id")))


def task_json(session, task: Task, lease, project: Project) -> dict:
    rows = session.execute(TASK_CONTENT, {"task_id": task.id}).all()
    by_id = {row.id: row for row in rows}
    return {
        "id": task.id,
        "project": project.name,
        "prompt": rows[0].prompt,
        "responses": [{"id": rid, "text": by_id[rid].text, "model": by_id[rid].model} for rid in lease.display_order],
        "meta": task.meta,
        "criteria": list(project.criteria or []),
        "lease_expires_at": iso(lease.expires_at),
    }


@bp.get("/openapi.json")
def openapi():
    from labeler.openapi import openapi_document

    return jsonify(openapi_document())


@bp.get("/projects")
def list_projects():
    with get_db().read() as session:
        rows = session.scalars(select(Project).order_by(Project.id)).all()
        return jsonify(projects=[projects.project_json(p) for p in rows])


@bp.post("/projects")
def create_project():
    require_admin()
    values = parse(ProjectIn, read_json_body()).model_dump()
    with get_db().write() as session:
        project = projects.create_project(session, **values)
        record_event(session, "project_created", session.get(User, g.api_user.id), target=f"project {project.name}",
                     detail=project_detail(projects.project_settings(project)))
        data = projects.project_json(project)
    return jsonify(project=data), 201


@bp.post("/projects/<name>/tasks")
def push_tasks(name: str):
    require_admin()
    tasks = parse(TasksIn, read_json_body()).model_dump()["tasks"]
    with get_db().write() as session:
        project = projects.find_project(session, name)
        counts = importer.import_tasks(session, project, tasks, source="api")
        record_event(session, "tasks_uploaded", session.get(User, g.api_user.id), target=f"project {project.name}", detail=counts)
    return jsonify(counts), 201


@bp.get("/projects/<name>/next")
def next_task(name: str):
    with get_db().write() as session:
        project = projects.find_project(session, name)
        user = g.api_user  # loaded by authenticate(); assignment reads its id only, so no second SELECT here
        leased = assignment.next_task(session, project, user)
        counts = assignment.progress(session, project, user)
        if leased is None:
            return jsonify(task=None, **counts)
        return jsonify(task=task_json(session, *leased, project), **counts)


@bp.post("/tasks/<int:task_id>/annotations")
def submit(task_id: int):
    body = read_json_body()
    with get_db().write() as session:
        annotation, created = assignment.submit_annotation(session, task_id, g.api_user, body)
        data = annotation_json(annotation)
    return jsonify(annotation=data), 201 if created else 200


@bp.get("/annotations/<int:annotation_id>")
def read_annotation(annotation_id: int):
    with get_db().read() as session:
        annotation = session.get(Annotation, annotation_id)
        # someone else's annotation answers exactly like a missing one: ids reveal nothing
        if annotation is None or (annotation.user_id != g.api_user.id and g.api_user.role != "admin"):
            raise LabelerError(f"field 'annotation_id': annotation {annotation_id} not found", status=404, field="annotation_id")
        return jsonify(annotation=annotation_json(annotation))


@bp.get("/projects/<name>/stats")
def project_stats(name: str):
    with get_db().read() as session:
        project = projects.find_project(session, name)
        data = {"project": project.name, "counts": projects.count_project(session, project),
                "you": assignment.progress(session, project, g.api_user)}
        if g.api_user.role == "admin":  # per-annotator figures are for admins
            data["quality"] = project_quality(session, project)
    return current_app.response_class(json.dumps(data, default=str), mimetype="application/json")




@bp.post("/projects/<name>/exports")
def create_export(name: str):
    require_admin()
    filters = parse(ExportIn, read_json_body(optional=True)).model_dump()
    with get_db().read() as session:
        projects.find_project(session, name)
    from labeler.export import export_project, new_export_dir

    out_dir = new_export_dir(name)
    result = export_project(get_db(), name, out_dir, **filters, created_by=g.api_user.id)
    result = json.loads(json.dumps(result, default=str))
    if "id" in result:
        result["download_url"] = url_for("api.download_export", export_id=result["id"])
    return jsonify(export=result), 201


@bp.get("/exports/<int:export_id>/download")
def download_export(export_id: int):
    require_admin()
    from labeler.export import zip_export

    with get_db().write() as session:
        buffer = zip_export(session, export_id)
        record_event(session, "export_downloaded", session.get(User, g.api_user.id), target=f"export {export_id}")
    return send_file(buffer, mimetype="application/zip", as_attachment=True, download_name=f"export-{export_id}.zip")
