"""Blueprint 'annotate': the annotator's pages.

  /                                        projects with this annotator's progress
  /projects/<name>/annotate                the next task (leased by labeler.assignment.next_task)
  /projects/<name>/annotations/<id>        re-open one of your own annotations to change it
  /projects/<name>/history                 your recent annotations
  POST /projects/<name>/tasks/<id>/submit  a form post or a fetch() with JSON; answers with the next page

Responses are shown in the display order stored on the lease (randomised per annotator), pairwise when
K = 2 and as a ranking when K > 2. The keyboard and drag-and-drop logic lives in static/annotate.js.
"""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from labeler import assignment
from labeler.projects import find_project
from labeler.db import get_db
from labeler.errors import LabelerError
from labeler.models import Annotation, Project, Task, User
from labeler.render import render_conversation, render_markdown
from labeler.schemas import form_int, read_json_body
from labeler.security import current_user, login_required, wants_json

bp = Blueprint("annotate", __name__)

HISTORY_LIMIT = 50


def slot_label(index: int, k: int) -> str:
    return "AB"[index] if k == 2 else str(index + 1)


def build_task_view(project: Project, task: Task, display_order: list, annotation: Annotation | None = None) -> dict:
    """Everything the template needs, rendered while the session is open (sanitized HTML, no lazy loads later)."""
    by_id = {r.id: r for r in task.responses}
    ordered = [by_id[int(rid)] for rid in display_order if int(rid) in by_id]
    ranking = (annotation.ranking if annotation else {}) or {}
    scores = (annotation.scores if annotation else {}) or {}
    responses = [
        {
            "id": r.id,
            "key": i + 1,
            "label": slot_label(i, len(ordered)),
            "html": render_markdown(r.text),
            "rank": ranking.get(str(r.id)),
            "scores": {c: (scores.get(c) or {}).get(str(r.id)) for c in project.criteria or []},
        }
        for i, r in enumerate(ordered)
    ]
    return {
        "task_id": task.id,
        "prompt_html": render_conversation(task.prompt.prompt),
        "responses": responses,
        "k": len(responses),
        "layout": "pairwise" if len(responses) == 2 else "ranking",
        "annotation": annotation,
        "all_bad": bool(annotation and annotation.all_bad),
        "rationale": (annotation.rationale if annotation else "") or "",
        "edited_response": (annotation.edited_response if annotation else "") or "",
        "seconds_spent": float(annotation.seconds_spent) if annotation else 0.0,
    }


def render_task_page(s, project: Project, user: User, view: dict, back_id: int | None):
    return render_template(
        "annotate.html",
        project=project,
        criteria=list(project.criteria or []),
        guidelines_html=render_markdown(project.guidelines or ""),
        view=view,
        progress=assignment.progress(s, project, user),
        back_url=url_for(".edit", name=project.name, annotation_id=back_id) if back_id else None,
        submit_url=url_for(".submit", name=project.name, task_id=view["task_id"]),
    )


@bp.get("/")
@login_required
def index():
    with get_db().read() as s:
        user = s.get(User, current_user().id)
        projects = s.scalars(select(Project).order_by(Project.name)).all()
        rows = [{"project": p, "progress": assignment.progress(s, p, user)} for p in projects]
    return render_template("index.html", rows=rows)


@bp.get("/projects/<name>/annotate")
@login_required
def next_task(name):
    with get_db().write() as s:  # leasing a task writes: take the write lock up front
        user = s.get(User, current_user().id)
        project = find_project(s, name)
        found = assignment.next_task(s, project, user)
        if found is None:
            return render_template("done.html", project=project, progress=assignment.progress(s, project, user))
        leased, lease = found  # plain rows: the page renders the task's prompt and responses from its object
        view = build_task_view(project, s.get(Task, leased.id), lease.display_order)
        previous = assignment.previous_annotations(s, project, user, 1)
        return render_task_page(s, project, user, view, previous[0].id if previous else None)


def load_own_annotation(s, project: Project, user: User, annotation_id: int) -> Annotation:
    """Only the annotator's own annotations exist for them: any other id is a 404, not a 403 (no probing)."""
    annotation = s.get(Annotation, annotation_id)
    if annotation is None or annotation.user_id != user.id or annotation.task.project_id != project.id:
        raise LabelerError(f"annotation {annotation_id} not found in project '{project.name}'", status=404, field="annotation_id")
    return annotation


@bp.get("/projects/<name>/annotations/<int:annotation_id>")
@login_required
def edit(name, annotation_id):
    with get_db().read() as s:
        user = s.get(User, current_user().id)
        project = find_project(s, name)
        annotation = load_own_annotation(s, project, user, annotation_id)
        view = build_task_view(project, annotation.task, annotation.display_order, annotation)
        recent = [a.id for a in assignment.previous_annotations(s, project, user, HISTORY_LIMIT)]
        # "Back" from an annotation goes one further back in this annotator's history.
        back_id = recent[recent.index(annotation.id) + 1] if annotation.id in recent[:-1] else None
        return render_task_page(s, project, user, view, back_id)


@bp.get("/projects/<name>/history")
@login_required
def history(name):
    with get_db().read() as s:
        user = s.get(User, current_user().id)
        project = find_project(s, name)
        annotations = assignment.previous_annotations(s, project, user, HISTORY_LIMIT)
        rows = [{"annotation": a, "prompt_html": render_conversation(a.task.prompt.prompt)} for a in annotations]
        return render_template("history.html", project=project, rows=rows)


def payload_from_form(form, criteria: list[str]) -> dict:
    """The no-JavaScript path: rank-<response id> selects, score-<criterion index>-<response id> radios."""
    ranking, scores = {}, {}
    for key, value in form.items():
        if key.startswith("rank-") and value:
            ranking[key[len("rank-"):]] = form_int(value)
        elif key.startswith("score-") and value:
            index, _, rid = key[len("score-"):].partition("-")
            index = form_int(index)
            if isinstance(index, int) and index < len(criteria) and rid:
                scores.setdefault(criteria[index], {})[rid] = form_int(value)
    all_bad = form.get("all_bad") in ("1", "on", "true")
    try:
        seconds = float(form.get("seconds_spent") or 0)
    except ValueError:
        raise LabelerError(f"field 'seconds_spent': expected a number, got {form['seconds_spent']!r:.40}", status=422,
                           field="seconds_spent") from None
    payload = {
        "ranking": None if all_bad and not ranking else ranking,  # all bad, no order: stored all tied
        "all_bad": all_bad,
        "scores": scores,
        "rationale": form.get("rationale", ""),
        "seconds_spent": seconds,
    }
    if form.get("version", "").strip():  # an edit of an existing annotation names the version it replaces
        payload["version"] = form_int(form["version"].strip())
    if form.get("edited_response", "").strip():
        payload["edited_response"] = form["edited_response"]
    return payload


@bp.post("/projects/<name>/tasks/<int:task_id>/submit")
@login_required
def submit(name, task_id):
    as_json = request.is_json
    next_url = url_for(".next_task", name=name)
    try:
        with get_db().write() as s:
            user = s.get(User, current_user().id)
            project = find_project(s, name)
            task = s.get(Task, task_id)
            if task is None or task.project_id != project.id:
                raise LabelerError(f"task {task_id} not found in project '{project.name}'", status=404, field="task_id")
            if as_json:
                payload = read_json_body()
            else:
                payload = payload_from_form(request.form, list(project.criteria or []))
            annotation, created = assignment.submit_annotation(s, task_id, user, payload)
            annotation_id, version = annotation.id, annotation.version
    except LabelerError as err:
        status = getattr(err, "status", 400)
        if as_json or wants_json():
            return jsonify(error=str(err), field=getattr(err, "field", None)), status
        flash(str(err), "error")
        return redirect(next_url)
    if as_json:
        return jsonify(annotation_id=annotation_id, version=version, created=created, next=next_url)
    flash("Saved." if created else "Changes saved.", "ok")
    return redirect(next_url)
