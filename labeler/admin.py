"""Blueprint 'admin' (admins only; annotators get 403): projects, quality, gold tasks, exports.

  /admin                                     projects with their counts
  /admin/projects/<name>                     per-annotator quality table and charts, tasks, exports
  /admin/projects/<name>/tasks/<id>          one task with everyone's labels; mark it gold (POST .../gold)
  POST /admin/projects/<name>/exports        run an export (labeler.export.export_project)
  /admin/exports/<id>/download               the export folder as a zip
"""

from __future__ import annotations


from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for
from sqlalchemy import func, select

from labeler.arena import arena_results, arena_votes
from labeler import projects, quality
from labeler.db import get_db
from labeler.errors import LabelerError
from labeler.models import Annotation, Export, Project, Task, User
from labeler.render import render_bar_chart, render_conversation, render_markdown
from labeler.schemas import AGGREGATIONS, ExportIn, form_int, parse
from labeler.security import admin_required, current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")

TASKS_SHOWN = 200


@bp.before_request
@admin_required
def require_admin():
    return None  # admin_required answers 403 (or the login redirect) before any view here runs


@bp.get("")
def dashboard():
    with get_db().read() as s:
        rows = []
        for p in s.scalars(select(Project).order_by(Project.name)):
            counts = projects.count_project(s, p)
            counts["exports"] = s.scalar(select(func.count(Export.id)).where(Export.project_id == p.id))
            rows.append({"project": p, "counts": counts})
        users = s.scalars(select(User).order_by(User.username)).all()
    return render_template("admin/dashboard.html", rows=rows, users=users)


def quality_charts(annotators: list[dict]) -> list:
    def bars(key):
        return [(a["username"], a.get(key), bool(a.get("simulated"))) for a in annotators]

    return [
        render_bar_chart("Throughput (tasks / hour)", bars("throughput_per_hour"), "{:.0f}"),
        render_bar_chart("Median seconds per task", bars("median_seconds"), "{:.1f}"),
        render_bar_chart("Gold accuracy", bars("gold_accuracy"), "{:.0%}", max_value=1.0),
        render_bar_chart("Agreement with others", bars("agreement"), "{:.0%}", max_value=1.0),
        render_bar_chart("Position bias (prefers first slot)", bars("position_bias"), "{:.0%}", max_value=1.0),
    ]


@bp.get("/projects/<name>")
def project(name):
    with get_db().read() as s:
        p = projects.find_project(s, name)
        stats = quality.project_quality(s, p)
        n_annotations = (
            select(func.count(Annotation.id)).where(Annotation.task_id == Task.id).correlate(Task).scalar_subquery()
        )
        tasks = s.execute(
            select(Task, n_annotations).where(Task.project_id == p.id).order_by(Task.id).limit(TASKS_SHOWN)
        ).all()
        task_rows = [{"task": t, "annotations": n, "prompt_html": render_conversation(t.prompt.prompt)} for t, n in tasks]
        exports = s.scalars(select(Export).where(Export.project_id == p.id).order_by(Export.id.desc())).all()
        counts = projects.count_project(s, p)
        arena = arena_results(arena_votes(s, p)) if p.kind == "arena" else None
    return render_template("admin/project.html", project=p, stats=stats, charts=quality_charts(stats["annotators"]),
                           tasks=task_rows, exports=exports, counts=counts, aggregations=AGGREGATIONS, arena=arena)


def load_task(s, project: Project, task_id: int) -> Task:
    task = s.get(Task, task_id)
    if task is None or task.project_id != project.id:
        raise LabelerError(f"task {task_id} not found in project '{project.name}'", status=404, field="task_id")
    return task


@bp.get("/projects/<name>/tasks/<int:task_id>")
def task(name, task_id):
    with get_db().read() as s:
        p = projects.find_project(s, name)
        t = load_task(s, p, task_id)
        gold = {str(k): v for k, v in (t.gold_ranking or {}).items()}
        responses = [{"id": r.id, "key": i + 1, "model": r.model, "html": render_markdown(r.text), "gold": gold.get(str(r.id))}
                     for i, r in enumerate(t.responses)]
        labels = s.execute(select(Annotation, User).join(User, User.id == Annotation.user_id)
                           .where(Annotation.task_id == t.id).order_by(Annotation.id)).all()
        label_rows = [{"annotation": a, "user": u, "ranks": [a.ranking.get(str(r["id"])) for r in responses]} for a, u in labels]
        return render_template("admin/task.html", project=p, task=t, prompt_html=render_conversation(t.prompt.prompt),
                               responses=responses, labels=label_rows)


def gold_from_form(form, task: Task) -> dict:
    ids = [str(r.id) for r in task.responses]
    ranking = {}
    for rid in ids:
        value = form_int(form.get(f"rank-{rid}", ""))
        if not isinstance(value, int) or not 1 <= value <= len(ids):
            raise LabelerError(f"gold ranking: response {rid} needs a rank from 1 to {len(ids)}", status=422, field=f"rank-{rid}")
        ranking[rid] = value
    return ranking


@bp.post("/projects/<name>/tasks/<int:task_id>/gold")
def mark_gold(name, task_id):
    try:
        with get_db().write() as s:
            p = projects.find_project(s, name)
            t = load_task(s, p, task_id)
            if request.form.get("action") == "clear":
                t.is_gold, t.gold_ranking = False, None
                message = f"Task {t.id} is no longer gold."
            else:
                t.gold_ranking = gold_from_form(request.form, t)
                t.is_gold = True
                message = f"Task {t.id} is gold now."
        flash(message, "ok")
    except LabelerError as err:
        flash(str(err), "error")
    return redirect(url_for(".task", name=name, task_id=task_id))


def export_filters_from_form(form) -> dict:
    """The export form's fields as labeler.schemas.ExportIn (numbers typed as text; empty means unset)."""
    values = {"aggregation": form.get("aggregation", "majority")}
    for field in ("min_agreement", "min_gold_accuracy", "test_fraction"):
        value = form.get(field, "").strip()
        if value:
            try:
                values[field] = float(value)
            except ValueError:
                raise LabelerError(f"field '{field}': expected a number, got {value!r}", status=422, field=field) from None
    return parse(ExportIn, values).model_dump()


@bp.post("/projects/<name>/exports")
def create_export(name):
    from labeler.export import export_project, new_export_dir

    try:
        with get_db().read() as s:
            projects.find_project(s, name)
        filters = export_filters_from_form(request.form)
        result = export_project(get_db(), name, new_export_dir(name), **filters, created_by=current_user().id)
        flash(f"Export {result['id']} written: {result['content_hash'][:12]}…", "ok")
    except LabelerError as err:
        flash(f"Export failed: {err}", "error")
    return redirect(url_for(".project", name=name) + "#exports")


@bp.get("/exports/<int:export_id>/download")
def download_export(export_id):
    # The API's download route takes a Bearer token; this one serves the same zip to a logged-in admin.
    from labeler.export import zip_export

    with get_db().read() as s:
        buffer = zip_export(s, export_id)
    return send_file(buffer, mimetype="application/zip", as_attachment=True, download_name=f"export-{export_id}.zip")
