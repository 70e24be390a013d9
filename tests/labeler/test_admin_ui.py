"""The admin's browser pages, through Flask's client: projects created and edited, tasks uploaded, users
and API tokens managed, tasks paginated and searched, the audit log. Each action, each refusal (a 4xx
naming the field, and nothing written), and the audit rows each action leaves."""

import io
import json
import re

import pytest
from conftest import PASSWORD
from sqlalchemy import func, select

from labeler.accounts import check_password
from labeler.db import get_db, upgrade_database
from labeler.models import ApiToken, AuditEvent, Project, Prompt, Task, User


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client, username, password=PASSWORD):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def admin_client(app, make_user, name="boss"):
    make_user(name, role="admin")
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c, csrf_from(c.get("/admin").text)


def count(app, model) -> int:
    with get_db(app).read() as s:
        return s.scalar(select(func.count()).select_from(model))


def events(app, action=None) -> list[AuditEvent]:
    with get_db(app).read() as s:
        query = select(AuditEvent).order_by(AuditEvent.id)
        return list(s.scalars(query.where(AuditEvent.action == action) if action else query))


def field_error(response) -> str:
    """The field the page's error names (data-field of #form-error, or the error page's message)."""
    found = re.search(r'id="form-error" role="alert" data-field="([^"]*)"', response.text)
    return found.group(1) if found else ""


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(c, token, name, data: bytes, filename="tasks.jsonl"):
    return c.post(f"/admin/projects/{name}/upload", data={"csrf_token": token, "file": (io.BytesIO(data), filename)},
                  content_type="multipart/form-data")


def project_form(token, **values):
    form = {"csrf_token": token, "name": "demo", "kind": "ranking", "k": "2", "overlap": "1", "criteria": "",
            "guidelines": "", "lease_seconds": "900", "allow_edit": "on", "ask_rationale": "on"}
    form.update(values)
    return {key: value for key, value in form.items() if value is not None}


# ---- access --------------------------------------------------------------------------------------------

PAGES = ["/admin/projects/new", "/admin/projects/demo/settings", "/admin/projects/demo/upload", "/admin/users",
         "/admin/users/1", "/admin/audit"]
FORMS = ["/admin/projects/new", "/admin/projects/demo/settings", "/admin/projects/demo/upload", "/admin/users",
         "/admin/users/1/active", "/admin/users/1/password", "/admin/users/1/tokens", "/admin/users/1/tokens/1/revoke"]


def test_annotators_get_403_and_strangers_the_login_page(app, client, make_user, make_project):
    make_project("demo")
    for path in PAGES:
        assert client.get(path).headers["Location"].startswith("/login"), path
    make_user("ann")
    assert login(client, "ann").status_code == 302
    token = csrf_from(client.get("/").text)
    for path in PAGES:
        assert client.get(path).status_code == 403, path
    before = (count(app, Project), count(app, User), count(app, ApiToken), count(app, Task))
    for path in FORMS:
        response = client.post(path, data={"csrf_token": token, "name": "x", "username": "mallory", "password": "pw",
                                           "action": "deactivate", "k": "2"})
        assert response.status_code == 403, path
    assert (count(app, Project), count(app, User), count(app, ApiToken), count(app, Task)) == before


def test_every_form_needs_the_csrf_token(app, make_user, make_project):
    make_project("demo")
    c, _token = admin_client(app, make_user)
    before = (count(app, Project), count(app, User), count(app, ApiToken), count(app, AuditEvent))
    for path in FORMS:
        response = c.post(path, data={"name": "x", "username": "mallory", "password": "pw", "action": "deactivate"})
        assert response.status_code == 400 and "csrf_token" in response.text, path
    assert (count(app, Project), count(app, User), count(app, ApiToken), count(app, AuditEvent)) == before
    # and every form on the new pages carries one
    for path in PAGES[:-1]:
        forms = re.findall(r'<form method="post".*?</form>', c.get(path).text, re.S)
        assert len(forms) >= 2 and all('name="csrf_token"' in form for form in forms), path  # 2: the page's and log out


# ---- projects --------------------------------------------------------------------------------------------


def test_create_a_project_in_the_browser(app, make_user):
    c, token = admin_client(app, make_user)
    assert 'name="name"' in c.get("/admin/projects/new").text
    response = c.post("/admin/projects/new", data=project_form(token, name="helpful", k="3", overlap="2",
                                                               criteria="helpfulness, harmlessness", guidelines="Be **kind**.\r\nThanks",
                                                               lease_seconds="600", allow_edit=None))
    assert response.status_code == 302 and response.headers["Location"] == "/admin/projects/helpful/upload"
    with get_db(app).read() as s:
        p = s.scalar(select(Project).where(Project.name == "helpful"))
    assert (p.k, p.overlap, p.criteria, p.lease_seconds, p.allow_edit, p.ask_rationale, p.kind) == \
        (3, 2, ["helpfulness", "harmlessness"], 600, False, True, "ranking")
    assert p.guidelines == "Be **kind**.\nThanks"
    (event,) = events(app, "project_created")
    assert event.actor == "boss" and event.target == "project helpful" and event.source == "web"
    assert event.detail["k"] == 3 and event.detail["guidelines"] == "19 characters"


@pytest.mark.parametrize("values, status, field", [
    ({"k": "three"}, 422, "k"),
    ({"k": "-1"}, 422, "k"),
    ({"k": "21"}, 422, "k"),
    ({"overlap": "0"}, 422, "overlap"),
    ({"lease_seconds": "1000000000000"}, 422, "lease_seconds"),
    ({"name": "has space"}, 422, "name"),
    ({"name": ""}, 422, "name"),
    ({"name": None}, 422, "name"),
    ({"kind": "poll"}, 422, "kind"),
    ({"kind": "arena", "k": "3"}, 422, "kind"),
    ({"criteria": "clarity, clarity"}, 422, "criteria"),
    ({"criteria": "a\tb"}, 422, "criteria[0]"),
    ({"allow_edit": "maybe"}, 422, "allow_edit"),
    ({"guidelines": "x" * 100_001}, 422, "guidelines"),
    ({"name": "taken"}, 409, "name"),
])
def test_a_bad_project_form_is_a_4xx_naming_the_field_and_writes_nothing(app, make_user, make_project, values, status, field):
    make_project("taken")
    c, token = admin_client(app, make_user)
    before = (count(app, Project), count(app, AuditEvent))
    response = c.post("/admin/projects/new", data=project_form(token, **values))
    assert response.status_code == status and field_error(response) == field
    if status == 422:
        assert f"field &#39;{field}&#39;" in response.text
    assert (count(app, Project), count(app, AuditEvent)) == before
    if values.get("name"):
        assert f'value="{values["name"]}"' in response.text  # what was typed is still there


def test_edit_a_project_and_k_and_kind_are_fixed_once_it_has_tasks(app, make_user, make_project):
    make_project("empty", n_tasks=0, k=2)
    make_project("full", n_tasks=2, k=2)
    c, token = admin_client(app, make_user)

    # without tasks, anything but the name may change
    form = {"csrf_token": token, "kind": "arena", "k": "2", "overlap": "3", "criteria": "style", "guidelines": "new",
            "lease_seconds": "120", "ask_rationale": "on"}
    assert c.post("/admin/projects/empty/settings", data=form).status_code == 302
    with get_db(app).read() as s:
        p = s.scalar(select(Project).where(Project.name == "empty"))
        assert (p.kind, p.overlap, p.criteria, p.guidelines, p.lease_seconds, p.allow_edit, p.ask_rationale) == \
            ("arena", 3, ["style"], "new", 120, False, True)
    (event,) = events(app, "project_updated")
    assert event.detail["kind"] == ["ranking", "arena"] and event.detail["overlap"] == [1, 3] and "k" not in event.detail

    # with tasks: the page shows K and kind as fixed, and a post that changes them is refused, whole
    page = c.get("/admin/projects/full/settings").text
    assert 'name="k"' not in page and 'name="kind"' not in page and "K and kind are fixed" in page
    for change, field in (({"k": "3"}, "k"), ({"kind": "arena"}, "kind")):
        response = c.post("/admin/projects/full/settings", data={"csrf_token": token, "overlap": "5", "lease_seconds": "900", **change})
        assert response.status_code == 409 and field_error(response) == field
        assert "cannot change" in response.text and "2 tasks" in response.text
    with get_db(app).read() as s:
        p = s.scalar(select(Project).where(Project.name == "full"))
        assert (p.k, p.kind, p.overlap) == (2, "ranking", 1)  # the overlap sent along was not written either
    # the safe settings still change
    response = c.post("/admin/projects/full/settings", data={"csrf_token": token, "overlap": "2", "lease_seconds": "900",
                                                             "allow_edit": "on", "ask_rationale": "on", "criteria": ""})
    assert response.status_code == 302
    bad = c.post("/admin/projects/full/settings", data={"csrf_token": token, "overlap": "lots", "lease_seconds": "900"})
    assert bad.status_code == 422 and field_error(bad) == "overlap" and 'value="lots"' in bad.text
    with get_db(app).read() as s:
        assert s.scalar(select(Project.overlap).where(Project.name == "full")) == 2
    assert len(events(app, "project_updated")) == 2
    assert c.get("/admin/projects/nope/settings").status_code == 404


# ---- uploads ---------------------------------------------------------------------------------------------


def test_upload_a_tasks_file(app, make_user, make_project, task_rows):
    make_project("demo", n_tasks=0, k=2)
    c, token = admin_client(app, make_user)
    rows = task_rows(3, k=2)
    rows[0]["gold_ranking"] = [2, 1]
    response = upload(c, token, "demo", b"\xef\xbb\xbf" + jsonl(rows) + b"\n")  # a byte order mark and a blank line
    assert response.status_code == 302
    assert "Imported 3 tasks from tasks.jsonl (0 already in the project)" in c.get(response.headers["Location"]).text
    with get_db(app).read() as s:
        tasks = s.scalars(select(Task).order_by(Task.id)).all()
        assert [t.source for t in tasks] == ["tasks.jsonl"] * 3 and tasks[0].is_gold
    again = upload(c, token, "demo", jsonl(rows), filename="again.jsonl")
    assert again.status_code == 302 and count(app, Task) == 3
    first, second = events(app, "tasks_uploaded")
    assert first.detail == {"file": "tasks.jsonl", "created": 3, "skipped": 0} and first.actor == "boss"
    assert second.detail == {"file": "again.jsonl", "created": 0, "skipped": 3}


def test_a_bad_tasks_file_lists_its_lines_and_writes_nothing(app, make_user, make_project, task_rows):
    make_project("demo", n_tasks=0, k=2)
    c, token = admin_client(app, make_user)
    rows = task_rows(5, k=2)
    lines = [json.dumps(r) for r in rows]
    lines[1] = json.dumps({**rows[1], "responses": rows[1]["responses"] + [{"text": "third"}]})  # k=3 in a k=2 project
    lines[3] = '{"prompt": "unfinished"'
    lines[4] = json.dumps({**rows[4], "prompt": 7})
    response = upload(c, token, "demo", ("\n".join(lines) + "\n").encode())
    assert response.status_code == 422 and field_error(response) == "responses"
    listed = re.findall(r'<li data-line="(\d+)">line \d+: (.*?)</li>', response.text)
    assert [line for line, _ in listed] == ["2", "4", "5"]
    assert "tasks.jsonl:2: field &#39;responses&#39;: has 3 responses but the project ranks k=2" in listed[0][1]
    assert "not valid JSON" in listed[1][1] and "field &#39;prompt&#39;" in listed[2][1]
    assert "Nothing was imported" in response.text and "3 lines of the file" in response.text
    assert count(app, Task) == 0 and count(app, Prompt) == 0 and events(app, "tasks_uploaded") == []

    for data, status, field in ((b"", 400, "file"), (b"\xff\xfe{}\n", 400, "body"), (b"\n\n", 400, "file")):
        response = upload(c, token, "demo", data)
        assert response.status_code == status and field_error(response) == field, data
    missing = c.post("/admin/projects/demo/upload", data={"csrf_token": token}, content_type="multipart/form-data")
    assert missing.status_code == 422 and field_error(missing) == "file"
    assert count(app, Task) == 0 and events(app, "tasks_uploaded") == []
    assert upload(c, token, "nope", jsonl(rows)).status_code == 404


# ---- users and tokens ------------------------------------------------------------------------------------


def user_id(app, username) -> int:
    with get_db(app).read() as s:
        return s.scalar(select(User.id).where(User.username == username))


def test_add_deactivate_reactivate_and_reset_a_user(app, make_user):
    c, token = admin_client(app, make_user)
    response = c.post("/admin/users", data={"csrf_token": token, "username": "ann", "password": "first pw", "role": "annotator"})
    assert response.status_code == 302
    assert re.search(r'data-username="ann"><td>ann</td><td>annotator</td>\s*<td>active', c.get("/admin/users").text)
    ann = app.test_client()
    assert login(ann, "ann", "first pw").status_code == 302
    uid = user_id(app, "ann")

    assert c.post(f"/admin/users/{uid}/active", data={"csrf_token": token, "action": "deactivate"}).status_code == 302
    assert ann.get("/").headers["Location"].startswith("/login")  # logged out at the next request
    assert login(app.test_client(), "ann", "first pw").status_code == 401
    assert c.post(f"/admin/users/{uid}/active", data={"csrf_token": token, "action": "reactivate"}).status_code == 302
    assert ann.get("/").headers["Location"].startswith("/login")  # reactivation does not bring the old session back

    assert c.post(f"/admin/users/{uid}/password", data={"csrf_token": token, "password": "second pw"}).status_code == 302
    assert login(app.test_client(), "ann", "first pw").status_code == 401
    assert login(app.test_client(), "ann", "second pw").status_code == 302

    actions = [(e.action, e.target, e.actor) for e in events(app) if e.action not in ("login", "login_failed")]
    assert actions == [("user_created", "user ann", "boss"), ("user_deactivated", "user ann", "boss"),
                       ("user_reactivated", "user ann", "boss"), ("password_reset", "user ann", "boss")]


def test_a_password_reset_ends_the_users_sessions_and_keeps_their_tokens(app, make_user, make_token):
    c, token = admin_client(app, make_user)
    api_token = make_token(make_user("ann"))
    ann, boss_elsewhere = app.test_client(), app.test_client()
    assert login(ann, "ann").status_code == 302 and login(boss_elsewhere, "boss").status_code == 302
    assert ann.get("/").status_code == 200
    stolen = ann.get_cookie("session").value  # the cookie as someone who copied it holds it

    assert c.post(f"/admin/users/{user_id(app, 'ann')}/password", data={"csrf_token": token, "password": "new pw"}).status_code == 302
    assert ann.get("/").headers["Location"].startswith("/login")
    assert login(ann, "ann", "new pw").status_code == 302 and ann.get("/").status_code == 200
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/").headers["Location"].startswith("/login")  # even while ann has a new session
    api = app.test_client().get("/api/v1/projects", headers={"Authorization": f"Bearer {api_token}"})
    assert api.status_code == 200  # tokens are revoked one by one, not by a reset

    # an admin's own reset keeps the browser that made it and ends their other sessions
    assert c.post(f"/admin/users/{user_id(app, 'boss')}/password", data={"csrf_token": token, "password": "boss pw"}).status_code == 302
    assert c.get("/admin").status_code == 200
    assert boss_elsewhere.get("/admin").headers["Location"].startswith("/login")
    assert [e.target for e in events(app, "password_reset")] == ["user ann", "user boss"]


def test_bad_user_forms_are_4xx_naming_the_field_and_write_nothing(app, make_user):
    c, token = admin_client(app, make_user)
    make_user("ann")
    uid, me = user_id(app, "ann"), user_id(app, "boss")
    before = (count(app, User), count(app, AuditEvent))
    for form, status, field in (({"username": "", "password": "pw"}, 422, "username"),
                                ({"username": "two  spaces", "password": "pw"}, 422, "username"),
                                ({"username": "new", "password": ""}, 422, "password"),
                                ({"username": "new", "password": "pw", "role": "root"}, 422, "role"),
                                ({"username": "ann", "password": "pw"}, 409, "username")):
        response = c.post("/admin/users", data={"csrf_token": token, **form})
        assert response.status_code == status and field_error(response) == field, form
    with get_db(app).read() as s:
        old_hash = s.get(User, uid).password_hash
    response = c.post(f"/admin/users/{uid}/password", data={"csrf_token": token, "password": ""})
    assert response.status_code == 422 and field_error(response) == "password"
    response = c.post(f"/admin/users/{me}/active", data={"csrf_token": token, "action": "deactivate"})
    assert response.status_code == 409 and "your own account" in response.text
    response = c.post(f"/admin/users/{uid}/active", data={"csrf_token": token, "action": "delete"})
    assert response.status_code == 422 and "action" in response.text
    assert c.post("/admin/users/999/password", data={"csrf_token": token, "password": "x"}).status_code == 404
    assert c.get(f"/admin/users/{2**64}").status_code == 404
    with get_db(app).read() as s:
        assert s.get(User, uid).password_hash == old_hash and s.get(User, me).active
        assert check_password(s.get(User, uid), PASSWORD)
    assert (count(app, User), count(app, AuditEvent)) == before


def test_create_list_and_revoke_api_tokens(app, make_user):
    c, token = admin_client(app, make_user)
    make_user("ann"), make_user("bob")
    uid, bob = user_id(app, "ann"), user_id(app, "bob")
    response = c.post(f"/admin/users/{uid}/tokens", data={"csrf_token": token, "name": "labeling script"})
    assert response.status_code == 200
    plain = re.search(r'id="new-token" value="(lbl_[^"]+)"', response.text).group(1)
    api = app.test_client()
    assert api.get("/api/v1/projects", headers={"Authorization": f"Bearer {plain}"}).status_code == 200

    page = c.get(f"/admin/users/{uid}").text
    assert "<h1>ann</h1>" in page and f'action="/admin/users/{uid}/tokens"' in page  # base.html's `user` is the admin
    assert c.get(f"/admin/users/{uid}/tokens").headers["Location"] == f"/admin/users/{uid}#tokens"
    assert "labeling script" in page and plain not in page  # listed by name; the token itself is shown once
    with get_db(app).read() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.user_id == uid))
    # a token is revoked through its own user only
    assert c.post(f"/admin/users/{bob}/tokens/{row.id}/revoke", data={"csrf_token": token}).status_code == 404
    assert api.get("/api/v1/projects", headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    assert c.post(f"/admin/users/{uid}/tokens/{row.id}/revoke", data={"csrf_token": token}).status_code == 302
    assert api.get("/api/v1/projects", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    again = c.post(f"/admin/users/{uid}/tokens/{row.id}/revoke", data={"csrf_token": token})
    assert again.status_code == 404 and "token_id" in again.text

    long_name = c.post(f"/admin/users/{uid}/tokens", data={"csrf_token": token, "name": "x" * 81})
    assert long_name.status_code == 422 and field_error(long_name) == "name"
    c.post(f"/admin/users/{uid}/active", data={"csrf_token": token, "action": "deactivate"})
    inactive = c.post(f"/admin/users/{uid}/tokens", data={"csrf_token": token, "name": "x"})
    assert inactive.status_code == 409 and "deactivated" in inactive.text
    assert count(app, ApiToken) == 0
    created, revoked = events(app, "token_created"), events(app, "token_revoked")
    assert [(e.target, e.detail["name"]) for e in created] == [("user ann", "labeling script")]
    assert [(e.target, e.detail["token_id"]) for e in revoked] == [("user ann", row.id)]


# ---- task list -------------------------------------------------------------------------------------------


def test_the_task_list_paginates_and_searches_prompt_text(app, make_user, make_project, task_rows):
    rows = task_rows(120, k=2)
    rows[7]["prompt"] = "Un café, s'il vous plaît"
    rows[8]["prompt"] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Explain 100% of it_all"}]
    rows[9]["prompt"] = "Explain 100 percent of itXall"
    make_project("demo", tasks=rows, k=2)
    c, _ = admin_client(app, make_user)

    def shown(**params):
        response = c.get("/admin/projects/demo", query_string=params)
        assert response.status_code == 200, response.text[-500:]
        table = response.text.split('id="task-list"')[1].split("</table>")[0]
        return re.findall(r"<tr><td>(\d+)</td>", table), response.text

    page1, html = shown()
    assert len(page1) == 50 and "page 1 of 3" in html and 'rel="next" class="button" href="/admin/projects/demo?page=2"' in html
    page3, _ = shown(page=3)
    assert len(page3) == 20 and set(page1).isdisjoint(page3)
    found, html = shown(q="prompt 11")  # prompt 11, 110-119
    assert len(found) == 11 and "11 tasks match" in html
    assert len(shown(q="café")[0]) == 1
    assert len(shown(q="100% of it_all")[0]) == 1  # % and _ are literal, not wildcards
    assert len(shown(q="be brief")[0]) == 1  # any message of a conversation
    assert len(shown(q="PROMPT 119")[0]) == 1  # case-insensitive
    none, html = shown(q="nothing like this")
    assert none == [] and "No task's prompt contains “nothing like this”" in html

    for params, status in (({"page": "4"}, 404), ({"page": "0"}, 422), ({"page": "two"}, 422), ({"q": "x" * 201}, 422)):
        response = c.get("/admin/projects/demo", query_string=params)
        assert response.status_code == status, params
        assert f"field &#39;{next(iter(params))}&#39;" in response.text


def test_a_migrated_database_finds_its_old_prompts(tmp_path):
    """0004 fills prompt.text for prompts stored before it."""
    from alembic import command
    from sqlalchemy import text

    from labeler.db import Database, alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0003_project_kind")
    database = Database(url)
    with database.engine.begin() as conn:
        conn.execute(text("INSERT INTO project (id, name, k, overlap, criteria, guidelines, lease_seconds, allow_edit, "
                          "ask_rationale, kind, created_at) VALUES (1, 'old', 2, 1, '[]', '', 900, 1, 1, 'ranking', '2026-01-01')"))
        conn.execute(text("INSERT INTO prompt (project_id, prompt, prompt_hash, meta) VALUES "
                          "(1, '\"Caf\\u00e9 au lait\"', 'a', '{}'), "
                          "(1, '[{\"role\": \"user\", \"content\": \"hello\"}, {\"role\": \"assistant\", \"content\": \"there\"}]', 'b', '{}')"))
    upgrade_database(url)
    with database.read() as s:
        assert s.scalars(select(Prompt.text).order_by(Prompt.id)).all() == ["Café au lait", "hello\nthere"]
    database.dispose()


# ---- audit log -------------------------------------------------------------------------------------------


def test_logins_and_failed_logins_are_in_the_audit_log(app, make_user):
    make_user("ann")
    assert login(app.test_client(), "ann", "wrong").status_code == 401
    assert login(app.test_client(), "nobody", "x").status_code == 401
    c, _ = admin_client(app, make_user)
    failed = events(app, "login_failed")
    assert [(e.actor, e.detail["reason"], e.actor_id is None) for e in failed] == \
        [("ann", "wrong password", False), ("nobody", "unknown user", True)]
    assert [e.actor for e in events(app, "login")] == ["boss"]
    assert all(e.ip == "127.0.0.1" and e.source == "web" for e in events(app))

    page = c.get("/admin/audit").text
    rows = re.findall(r'<tr data-action="(\w+)">', page)
    assert rows == ["login", "login_failed", "login_failed"]  # newest first
    assert "wrong password" in page and "unknown user" in page
    only = c.get("/admin/audit?action=login_failed").text
    assert re.findall(r'<tr data-action="(\w+)">', only) == ["login_failed", "login_failed"]
    bad = c.get("/admin/audit?action=drop_table")
    assert bad.status_code == 422 and "field &#39;action&#39;" in bad.text


def test_the_audit_log_paginates(app, make_user):
    from labeler.audit import record_event

    c, _ = admin_client(app, make_user)
    with get_db(app).write() as s:
        for i in range(60):
            record_event(s, "export_downloaded", target=f"export {i}")
    first = c.get("/admin/audit").text
    assert len(re.findall(r"<tr data-action=", first)) == 50 and "export 59" in first and "page 1 of 2" in first
    second = c.get("/admin/audit?page=2").text
    assert len(re.findall(r"<tr data-action=", second)) == 11 and "export 0<" in second and "command line" in second
    assert c.get("/admin/audit?page=3").status_code == 404


def test_exports_downloads_and_api_changes_are_audited(app, make_user, make_project, auth_header, task_rows):
    make_project("demo", n_tasks=2)
    c, token = admin_client(app, make_user)
    assert c.post("/admin/projects/demo/exports", data={"csrf_token": token, "test_fraction": "0"}).status_code == 302
    (made,) = events(app, "export_created")
    assert made.actor == "boss" and made.target == "project demo" and made.detail["test_fraction"] == 0.0
    assert c.get(f"/admin/exports/{made.detail['export_id']}/download").status_code == 200
    (downloaded,) = events(app, "export_downloaded")
    assert downloaded.target == f"export {made.detail['export_id']}" and downloaded.actor == "boss"

    with get_db(app).read() as s:
        boss = s.scalar(select(User).where(User.username == "boss"))
    headers = auth_header(boss)
    assert c.post("/api/v1/projects", json={"name": "via-api"}, headers=headers).status_code == 201
    assert c.post("/api/v1/projects/via-api/tasks", json={"tasks": task_rows(2)}, headers=headers).status_code == 201
    created = events(app, "project_created")
    uploaded = events(app, "tasks_uploaded")
    assert [(e.target, e.source, e.actor) for e in created] == [("project via-api", "api", "boss")]
    assert [(e.target, e.detail, e.source) for e in uploaded] == [("project via-api", {"created": 2, "skipped": 0}, "api")]


def test_the_command_line_is_audited_too(app, runner, db_url, tmp_path, task_rows):
    from labeler.cli import main

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(jsonl(task_rows(2)))
    for args in (["users", "add", "ann", "--password", "pw"], ["users", "token", "ann", "--name", "laptop"],
                 ["users", "deactivate", "ann"], ["projects", "create", "demo", "--guidelines", "Be brief."],
                 ["import", str(tasks), "--project", "demo"]):
        result = runner.invoke(main, [*args, "--db", db_url])
        assert result.exit_code == 0, result.output
    rows = [(e.action, e.target, e.source, e.actor, e.actor_id) for e in events(app)]
    assert rows == [("user_created", "user ann", "cli", "", None), ("token_created", "user ann", "cli", "", None),
                    ("user_deactivated", "user ann", "cli", "", None), ("project_created", "project demo", "cli", "", None),
                    ("tasks_uploaded", "project demo", "cli", "", None)]
    assert events(app, "project_created")[0].detail["guidelines"] == "9 characters"
    assert events(app, "tasks_uploaded")[0].detail == {"file": "tasks.jsonl", "created": 2, "skipped": 0}
    # and a failed import leaves no row
    tasks.write_text('{"prompt": "x"}\n')
    assert runner.invoke(main, ["import", str(tasks), "--project", "demo", "--db", db_url]).exit_code == 1
    assert len(events(app, "tasks_uploaded")) == 1
