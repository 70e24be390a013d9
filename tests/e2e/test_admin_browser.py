"""A new admin who never opens a shell: in a real browser against a real `labeler serve`, they create a
project, upload a tasks file (a bad one first: its lines are listed and nothing is written), add an
annotator and make an API token; then the annotator logs in and sees the task. The audit log shows it all."""

import json
import urllib.request

import pytest
from sqlalchemy import func, select

from labeler.models import ApiToken, Task, User

from .conftest import PASSWORD

pytestmark = pytest.mark.e2e

TASKS = [{"prompt": f"Name a colour number {i}", "responses": [{"text": f"red {i}", "model": "a"}, {"text": f"blue {i}", "model": "b"}]}
         for i in range(2)]


def test_a_new_admin_sets_up_a_project_in_the_browser_only(page, browser, server, seed, login, db, tmp_path):
    seed(users=[("root", "admin")])  # the one account made outside the browser: the first admin
    login(page, server, "root")
    page.click("nav.topnav >> text=Admin")
    page.click("#new-project")
    page.wait_for_url(f"{server}/admin/projects/new")
    page.wait_for_selector("input[name=name]:focus")

    # the project form, from the keyboard: the name field has the focus, Tab moves on, Enter submits
    page.keyboard.type("colours")
    page.fill("input[name=criteria]", "clarity")
    page.fill("textarea[name=guidelines]", "Pick the **nicer** colour.")
    page.focus("input[name=overlap]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/admin/projects/colours/upload")
    assert "Project 'colours' created" in page.inner_text(".flash")

    # a bad file first: the line and field are named, and nothing is imported
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(TASKS[0]) + "\n" + json.dumps({"prompt": "only one", "responses": [{"text": "x"}]}) + "\n")
    page.set_input_files("input[name=file]", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector(".line-errors li")
    assert page.get_attribute(".line-errors li", "data-line") == "2"
    assert "bad.jsonl:2: field 'responses'" in page.inner_text(".line-errors")
    with db.read() as session:
        assert session.scalar(select(func.count(Task.id))) == 0

    good = tmp_path / "tasks.jsonl"
    good.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    page.set_input_files("input[name=file]", str(good))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(f"{server}/admin/projects/colours")
    assert "Imported 2 tasks from tasks.jsonl" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=task-count]") == "2 tasks"
    page.fill("input[name=q]", "number 1")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=1 task matches")

    # an annotator and their API token
    page.click("nav.subnav >> text=Users")
    page.fill("#add-user-form input[name=username]", "ann")
    page.fill("#add-user-form input[name=password]", PASSWORD)
    page.select_option("#add-user-form select[name=role]", "annotator")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Added annotator 'ann'")
    page.click("tr[data-username=ann] >> text=Manage")
    page.fill("#token-form input[name=name]", "ann's script")
    page.click("#token-form button[type=submit]")
    token = page.input_value("#new-token")
    assert token.startswith("lbl_")
    with db.read() as session:
        owners = session.execute(select(User.username, ApiToken.name).join(ApiToken, ApiToken.user_id == User.id)).all()
    assert [tuple(o) for o in owners] == [("ann", "ann's script")]
    request = urllib.request.Request(f"{server}/api/v1/projects/colours/stats", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["you"]["remaining"] == 2  # ann's view of the project
    page.goto(page.url)  # shown once: the token list names it, the page no longer holds it (a GET; reload would re-post)
    assert "ann's script" in page.inner_text("#token-list") and token not in page.content()

    page.click("nav.subnav >> text=Audit log")
    actions = page.eval_on_selector_all("#audit tr[data-action]", "rows => rows.map(r => r.dataset.action)")
    assert actions[:4] == ["token_created", "user_created", "tasks_uploaded", "project_created"]
    assert "login" in actions
    assert "user ann" in page.inner_text("#audit tr[data-action=token_created]")

    # the annotator logs in and sees the task
    context = browser.new_context()
    annotator = context.new_page()
    annotator.set_default_timeout(15_000)
    login(annotator, server, "ann")
    assert annotator.inner_text("[data-testid=remaining-colours]") == "2"
    annotator.click("text=Annotate")
    annotator.wait_for_selector("article.response")
    assert "Name a colour number" in annotator.inner_text("main")
    assert "nicer" in annotator.text_content(".guidelines")  # the guidelines the admin wrote (folded away)
    context.close()
