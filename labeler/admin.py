"""Blueprint 'admin' (admins only; annotators get 403): everything an admin does, in the browser.

  /admin                                     projects with their counts
  /admin/projects/new                        create a project (GET the form, POST it)
  /admin/projects/<name>                     quality table and charts, exports, tasks (?q=search&page=N)
  /admin/projects/<name>/settings            edit a project (k and kind are fixed once it has tasks)
  /admin/projects/<name>/upload              upload a tasks file (JSONL): every line checked, nothing written on an error
  /admin/projects/<name>/tasks/<id>          one task with everyone's labels; mark it gold (POST .../gold)
  POST /admin/projects/<name>/exports        run an export (labeler.export.export_project)
  /admin/exports/<id>/download               the export folder as a zip
  /admin/users                               users; add one (POST)
  /admin/users/<id>                          one user: deactivate/reactivate, reset the password, API tokens
  /admin/audit                               the audit log (?action=NAME&page=N)

Forms are validated by labeler.schemas; a bad one is answered with its page again, the error naming the
field, and the 4xx status of the LabelerError. Every change is recorded in the audit log (labeler.audit)
in the transaction that makes it.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePath

from flask import Blueprint, flash, redirect, render_template, request, send_file, session, url_for
from sqlalchemy import func, select

from labeler.arena import arena_results, arena_votes
from labeler import accounts, projects, quality
from labeler.audit import ACTION_LABELS, list_events, project_detail, record_event
from labeler.db import get_db
from labeler.errors import LabelerError
from labeler.importer import MAX_LINE_ERRORS, import_tasks, validate_task_lines
from labeler.models import PROJECT_KINDS, ROLES, Annotation, ApiToken, Export, Project, Prompt, Task, User
from labeler.render import render_bar_chart, render_conversation, render_markdown
from labeler.schemas import AGGREGATIONS, AuditListIn, ExportIn, ProjectIn, TaskListIn, UserIn, form_bool, form_int, parse
from labeler.security import admin_required, current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")

TASKS_PER_PAGE = 50
EVENTS_PER_PAGE = 50


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


def query_args(schema, numbers=("page",)):
    """The query string's fields that `schema` knows, validated by it (an empty value counts as unset)."""
    values = {key: request.args[key] for key in schema.model_fields if request.args.get(key, "") != ""}
    return parse(schema, {key: form_int(v) if key in numbers else v for key, v in values.items()})


def page_count(total: int, per_page: int, page: int) -> int:
    pages = max(1, math.ceil(total / per_page))
    if page > pages:
        raise LabelerError(f"field 'page': page {page} does not exist (there {'is 1 page' if pages == 1 else f'are {pages} pages'})",
                           status=404, field="page")
    return pages


@bp.get("/projects/<name>")
def project(name):
    args = query_args(TaskListIn)
    with get_db().read() as s:
        p = projects.find_project(s, name)
        stats = quality.project_quality(s, p)
        where = [Task.project_id == p.id]
        if args.q.strip():  # a case-insensitive substring of the prompt's text; % and _ are matched literally
            where.append(Prompt.text.icontains(args.q.strip(), autoescape=True))
        total = s.scalar(select(func.count(Task.id)).join(Prompt, Prompt.id == Task.prompt_id).where(*where))
        pages = page_count(total, TASKS_PER_PAGE, args.page)
        n_annotations = (
            select(func.count(Annotation.id)).where(Annotation.task_id == Task.id).correlate(Task).scalar_subquery()
        )
        tasks = s.execute(
            select(Task, n_annotations).join(Prompt, Prompt.id == Task.prompt_id).where(*where).order_by(Task.id)
            .offset((args.page - 1) * TASKS_PER_PAGE).limit(TASKS_PER_PAGE)
        ).all()
        task_rows = [{"task": t, "annotations": n, "prompt_html": render_conversation(t.prompt.prompt)} for t, n in tasks]
        exports = s.scalars(select(Export).where(Export.project_id == p.id).order_by(Export.id.desc())).all()
        counts = projects.count_project(s, p)
        arena = arena_results(arena_votes(s, p)) if p.kind == "arena" else None
    return render_template("admin/project.html", project=p, stats=stats, charts=quality_charts(stats["annotators"]),
                           tasks=task_rows, exports=exports, counts=counts, aggregations=AGGREGATIONS, arena=arena,
                           search=args.q, page=args.page, pages=pages, matching=total)


INTEGER = re.compile(r"-?[0-9]{1,19}")


def project_values_from_form(form, fields) -> dict:
    """The project form's fields, typed for labeler.schemas.ProjectIn: numbers from their digits (anything
    else stays text for the schema to refuse by name), criteria comma-separated, checkboxes as booleans.
    A field the form did not send is left out (the edit form leaves out k and kind once tasks exist)."""
    values = {}
    for key in fields:
        if key in ("allow_edit", "ask_rationale"):
            values[key] = form_bool(form.get(key))
        elif key not in form:
            continue
        elif key in ("k", "overlap", "lease_seconds"):
            value = form[key].strip()
            values[key] = int(value) if INTEGER.fullmatch(value) else value
        elif key == "criteria":
            values[key] = [c.strip() for c in form[key].split(",") if c.strip()]
        elif key == "guidelines":
            values[key] = form[key].replace("\r\n", "\n")
        else:
            values[key] = form[key].strip()
    return values


PROJECT_FORM = ("name", "kind", "k", "overlap", "criteria", "guidelines", "lease_seconds", "allow_edit", "ask_rationale")
NEW_PROJECT = {"name": "", "kind": "ranking", "k": 2, "overlap": 1, "criteria": [], "guidelines": "", "lease_seconds": 900,
               "allow_edit": True, "ask_rationale": True}  # labeler.schemas.ProjectIn's defaults


def shown_values(settings: dict, form=None) -> dict:
    """What the project form shows: the settings, overlaid after an error by what was typed."""
    shown = {**settings, "criteria": ", ".join(settings["criteria"])}
    if form is not None:
        shown.update({key: form[key] for key in PROJECT_FORM if key in form})
        shown.update({key: key in form for key in ("allow_edit", "ask_rationale")})
    return shown


@bp.route("/projects/new", methods=["GET", "POST"])
def new_project():
    if request.method == "GET":
        return render_template("admin/project_form.html", project=None, values=shown_values(NEW_PROJECT), kinds=PROJECT_KINDS,
                               n_tasks=0, error=None)
    try:
        values = parse(ProjectIn, project_values_from_form(request.form, PROJECT_FORM)).model_dump()  # names a missing name
        with get_db().write() as s:
            p = projects.create_project(s, **values)
            record_event(s, "project_created", current_user(), target=f"project {p.name}",
                         detail=project_detail(projects.project_settings(p)))
    except LabelerError as err:
        return render_template("admin/project_form.html", project=None, values=shown_values(NEW_PROJECT, request.form),
                               kinds=PROJECT_KINDS, n_tasks=0, error=err), err.status
    flash(f"Project '{p.name}' created. Upload its tasks next.", "ok")
    return redirect(url_for(".upload", name=p.name))


@bp.route("/projects/<name>/settings", methods=["GET", "POST"])
def edit_project(name):
    with get_db().read() as s:
        p = projects.find_project(s, name)
        n_tasks = s.scalar(select(func.count(Task.id)).where(Task.project_id == p.id))
        current = projects.project_settings(p)
    if request.method == "GET":
        return render_template("admin/project_form.html", project=p, values=shown_values(current), kinds=PROJECT_KINDS,
                               n_tasks=n_tasks, error=None)
    changes = project_values_from_form(request.form, projects.EDITABLE)
    try:
        with get_db().write() as s:
            target = projects.find_project(s, name)
            changed = projects.update_project(s, target, **changes)
            if changed:
                record_event(s, "project_updated", current_user(), target=f"project {name}", detail=project_detail(changed))
    except LabelerError as err:
        return render_template("admin/project_form.html", project=p, values=shown_values(current, request.form),
                               kinds=PROJECT_KINDS, n_tasks=n_tasks, error=err), err.status
    flash(f"Saved: {', '.join(changed)}." if changed else "Nothing changed.", "ok")
    return redirect(url_for(".project", name=name))


@bp.route("/projects/<name>/upload", methods=["GET", "POST"])
def upload(name):
    with get_db().read() as s:
        p = projects.find_project(s, name)
    if request.method == "GET":
        return render_template("admin/upload.html", project=p, error=None, line_errors=[])
    file = request.files.get("file")
    try:
        if file is None or not file.filename:
            raise LabelerError("field 'file': choose a tasks file (JSONL: one task per line)", status=422, field="file")
        source = PurePath(file.filename).name[:200] or "upload"
        tasks = validate_task_lines(file.stream, source, p.k)  # every line checked before anything is written
        with get_db().write() as s:  # one transaction: the tasks and their audit row commit together, or nothing
            counts = import_tasks(s, projects.find_project(s, name), tasks, source=source)
            record_event(s, "tasks_uploaded", current_user(), target=f"project {name}", detail={"file": source, **counts})
    except LabelerError as err:
        return render_template("admin/upload.html", project=p, error=err, line_errors=getattr(err, "errors", []),
                               max_errors=MAX_LINE_ERRORS), err.status
    flash(f"Imported {counts['created']} tasks from {source} ({counts['skipped']} already in the project).", "ok")
    return redirect(url_for(".project", name=name))


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

    with get_db().write() as s:
        buffer = zip_export(s, export_id)
        record_event(s, "export_downloaded", current_user(), target=f"export {export_id}")
    return send_file(buffer, mimetype="application/zip", as_attachment=True, download_name=f"export-{export_id}.zip")


# ---- users and their API tokens ----------------------------------------------------------------------


def users_page(error=None, values=None, status=200):
    with get_db().read() as s:
        users = s.scalars(select(User).order_by(User.username)).all()
        tokens = dict(s.execute(select(ApiToken.user_id, func.count(ApiToken.id)).group_by(ApiToken.user_id)).all())
    return render_template("admin/users.html", users=users, tokens=tokens, roles=ROLES, error=error, values=values or {}), status


@bp.get("/users")
def users():
    return users_page()


@bp.post("/users")
def add_user():
    values = {"username": request.form.get("username", "").strip(), "password": request.form.get("password", ""),
              "role": request.form.get("role", "annotator")}
    try:
        parse(UserIn, values)  # the schema names the field (create_user checks it again, and that the name is free)
        with get_db().write() as s:
            user = accounts.create_user(s, **values)
            record_event(s, "user_created", current_user(), target=f"user {user.username}", detail={"role": user.role})
    except LabelerError as err:
        return users_page(error=err, values=values, status=err.status)
    flash(f"Added {user.role} '{user.username}'. Give them their password; they can log in now.", "ok")
    return redirect(url_for(".users"))


def user_page(user_id: int, error=None, new_token=None, status=200):
    with get_db().read() as s:
        user = accounts.get_user(s, user_id)
        tokens = accounts.list_tokens(s, user)
    return render_template("admin/user.html", account=user, tokens=tokens, error=error, new_token=new_token), status


@bp.get("/users/<int:user_id>")
def user(user_id):
    return user_page(user_id)


@bp.post("/users/<int:user_id>/active")
def set_active(user_id):
    action = request.form.get("action", "")
    if action not in ("deactivate", "reactivate"):
        raise LabelerError(f"field 'action': expected 'deactivate' or 'reactivate', got {action[:40]!r}", status=422, field="action")
    with get_db().write() as s:
        user = accounts.get_user(s, user_id)
        if user.id == current_user().id and action == "deactivate":
            raise LabelerError("field 'action': you cannot deactivate your own account (another admin can)", status=409, field="action")
        if accounts.set_user_active(s, user, action == "reactivate"):
            record_event(s, f"user_{action}d", current_user(), target=f"user {user.username}")
    flash(f"'{user.username}' is {'active again' if user.active else 'deactivated: they cannot log in or use their tokens'}.", "ok")
    return redirect(url_for(".user", user_id=user_id))


@bp.post("/users/<int:user_id>/password")
def reset_password(user_id):
    try:
        with get_db().write() as s:
            user = accounts.get_user(s, user_id)
            accounts.reset_password(s, user, request.form.get("password", ""))
            record_event(s, "password_reset", current_user(), target=f"user {user.username}")
    except LabelerError as err:
        if err.status == 404:
            raise
        return user_page(user_id, error=err, status=err.status)
    if user.id == current_user().id:  # an admin's own reset ends their other sessions, not this one
        session["session_version"] = user.session_version
    flash(f"New password set for '{user.username}'; their browser sessions have ended (their API tokens still work: "
          "revoke them below if they may have leaked).", "ok")
    return redirect(url_for(".user", user_id=user_id))


@bp.get("/users/<int:user_id>/tokens")
def tokens(user_id):
    # the address the token form leaves in the location bar: visiting it again shows the user, not a 405
    return redirect(url_for(".user", user_id=user_id) + "#tokens")


@bp.post("/users/<int:user_id>/tokens")
def create_token(user_id):
    try:
        with get_db().write() as s:
            user = accounts.get_user(s, user_id)
            if not user.active:
                raise LabelerError(f"field 'user_id': user '{user.username}' is deactivated: reactivate them first", status=409, field="user_id")
            token = accounts.create_token(s, user, name=request.form.get("name", "").strip())
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == accounts.hash_token(token)))
            record_event(s, "token_created", current_user(), target=f"user {user.username}", detail={"token_id": row.id, "name": row.name})
    except LabelerError as err:
        if err.status == 404:
            raise
        return user_page(user_id, error=err, status=err.status)
    # Shown in this answer only (not flashed: the session cookie is signed, not encrypted) and never again.
    return user_page(user_id, new_token=token)


@bp.post("/users/<int:user_id>/tokens/<int:token_id>/revoke")
def revoke_token(user_id, token_id):
    with get_db().write() as s:
        user = accounts.get_user(s, user_id)
        row = accounts.revoke_token(s, user, token_id)
        record_event(s, "token_revoked", current_user(), target=f"user {user.username}", detail={"token_id": token_id, "name": row.name})
    flash(f"Token {token_id}{f' ({row.name})' if row.name else ''} of '{user.username}' revoked.", "ok")
    return redirect(url_for(".user", user_id=user_id))


# ---- the audit log -------------------------------------------------------------------------------------


@bp.get("/audit")
def audit():
    args = query_args(AuditListIn)
    with get_db().read() as s:
        events, total = list_events(s, args.page, EVENTS_PER_PAGE, args.action)
    pages = page_count(total, EVENTS_PER_PAGE, args.page)
    return render_template("admin/audit.html", events=events, total=total, page=args.page, pages=pages, action=args.action,
                           labels=ACTION_LABELS)
