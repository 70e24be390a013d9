"""The annotator's pages through Flask's test client: next task, submit (JSON and form), progress,
going back to change a label, and 404 for anyone else's annotation."""

import re

import pytest
from conftest import PASSWORD
from sqlalchemy import select

from labeler.db import get_db
from labeler.models import Annotation, Assignment


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client, username):
    token = csrf_from(client.get("/login").text)
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token}).status_code == 302


def open_task(client, project="demo"):
    html = client.get(f"/projects/{project}/annotate").text
    task_id = int(re.search(r'data-task-id="(\d+)"', html).group(1))
    shown = [int(x) for x in re.findall(r'name="rank-(\d+)"', html)]
    return html, task_id, shown, csrf_from(html)


@pytest.fixture
def ann(client, make_user, make_project):
    make_user("ann")
    make_project("demo", n_tasks=3, k=3, criteria=["helpfulness"])
    login(client, "ann")
    return client


def test_annotate_page_shows_responses_in_the_stored_display_order(ann, app):
    html, task_id, shown, _ = open_task(ann)
    with get_db(app).read() as s:
        lease = s.scalar(select(Assignment).where(Assignment.task_id == task_id))
    assert shown == lease.display_order and len(shown) == 3
    assert 'data-layout="ranking"' in html and "helpfulness" in html
    assert "rank that response next" in html and "<kbd>Enter</kbd>" in html  # shortcuts are on the page
    assert re.search(r'id="progress-done">0<', html) and re.search(r'id="progress-remaining">3<', html)


def test_pairwise_layout_when_k_is_2(client, make_user, make_project):
    make_user("bob")
    make_project("pairs", n_tasks=1, k=2)
    login(client, "bob")
    html = client.get("/projects/pairs/annotate").text
    assert 'data-layout="pairwise"' in html and "A is better" in html and "B is better" in html


def test_json_submit_stores_the_ranking_and_moves_on(ann, app):
    _, task_id, shown, token = open_task(ann)
    ranking = {str(shown[2]): 1, str(shown[0]): 2, str(shown[1]): 2}
    body = {"ranking": ranking, "scores": {"helpfulness": {str(shown[2]): 5}}, "rationale": "third is right", "seconds_spent": 12.5}
    response = ann.post(f"/projects/demo/tasks/{task_id}/submit", json=body, headers={"X-CSRF-Token": token})
    assert response.status_code == 200, response.json
    assert response.json["next"] == "/projects/demo/annotate" and response.json["created"] is True
    with get_db(app).read() as s:
        stored = s.get(Annotation, response.json["annotation_id"])
    assert stored.ranking == ranking and stored.seconds_spent == 12.5 and stored.scores == {"helpfulness": {str(shown[2]): 5}}
    html, next_id, _, _ = open_task(ann)
    assert next_id != task_id and re.search(r'id="progress-done">1<', html) and re.search(r'id="progress-remaining">2<', html)


def test_form_submit_without_javascript(ann, app):
    _, task_id, shown, token = open_task(ann)
    form = {"csrf_token": token, "seconds_spent": "4", "rationale": "",
            f"rank-{shown[0]}": "1", f"rank-{shown[1]}": "2", f"rank-{shown[2]}": "3", f"score-0-{shown[0]}": "4"}
    response = ann.post(f"/projects/demo/tasks/{task_id}/submit", data=form)
    assert response.status_code == 302
    with get_db(app).read() as s:
        stored = s.scalar(select(Annotation).where(Annotation.task_id == task_id))
    assert stored.ranking == {str(shown[0]): 1, str(shown[1]): 2, str(shown[2]): 3}
    assert stored.scores == {"helpfulness": {str(shown[0]): 4}}


def test_invalid_submission_answers_the_field_and_writes_nothing(ann, app):
    _, task_id, shown, token = open_task(ann)
    response = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"ranking": {str(shown[0]): 1}}, headers={"X-CSRF-Token": token})
    assert response.status_code == 422 and response.json["field"] == "ranking"
    with get_db(app).read() as s:
        assert s.scalar(select(Annotation)) is None


def test_all_bad_without_an_order(ann, app):
    _, task_id, shown, token = open_task(ann)
    response = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"all_bad": True}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    with get_db(app).read() as s:
        stored = s.get(Annotation, response.json["annotation_id"])
    assert stored.all_bad and set(stored.ranking.values()) == {1}


def test_back_reopens_and_changes_the_last_label(ann, app):
    _, task_id, shown, token = open_task(ann)
    first = {str(shown[0]): 1, str(shown[1]): 2, str(shown[2]): 3}
    aid = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"ranking": first}, headers={"X-CSRF-Token": token}).json["annotation_id"]
    html, _, _, _ = open_task(ann)
    assert f'href="/projects/demo/annotations/{aid}"' in html  # the Back link
    edit_html = ann.get(f"/projects/demo/annotations/{aid}").text
    assert f'data-task-id="{task_id}"' in edit_html and re.search(rf'name="rank-{shown[0]}".*?value="1" selected', edit_html, re.S)
    # the page carries the version it shows, for annotate.js (data-version) and the plain form (hidden field)
    assert 'data-version="1"' in edit_html and '<input type="hidden" name="version" value="1">' in edit_html
    changed = {str(shown[0]): 3, str(shown[1]): 1, str(shown[2]): 2}
    stale = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"ranking": changed}, headers={"X-CSRF-Token": token})
    assert stale.status_code == 409 and stale.json["field"] == "version"  # a change without the version it replaces
    response = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"ranking": changed, "version": 1}, headers={"X-CSRF-Token": token})
    assert response.json == {"annotation_id": aid, "version": 2, "created": False, "next": "/projects/demo/annotate"}
    # the same edit page, submitted again as a plain form after that change, is stale now: 409 kept as a flash, nothing written
    form = {"csrf_token": token, "version": "1", f"rank-{shown[0]}": "1", f"rank-{shown[1]}": "2", f"rank-{shown[2]}": "3"}
    ann.post(f"/projects/demo/tasks/{task_id}/submit", data=form)
    assert "is at version 2, not 1" in ann.get("/projects/demo/annotate").text
    with get_db(app).read() as s:
        assert s.get(Annotation, aid).ranking == changed and s.get(Annotation, aid).version == 2
        assert len(s.scalars(select(Annotation)).all()) == 1
    assert str(aid) in ann.get("/projects/demo/history").text


def test_someone_elses_annotation_is_404(app, make_user, make_project):
    make_user("ann"), make_user("eve")
    make_project("demo", n_tasks=2, k=3, overlap=2)
    ann, eve = app.test_client(), app.test_client()
    login(ann, "ann"), login(eve, "eve")
    _, task_id, shown, token = open_task(ann)
    aid = ann.post(f"/projects/demo/tasks/{task_id}/submit", json={"ranking": {str(r): 1 for r in shown}},
                   headers={"X-CSRF-Token": token}).json["annotation_id"]
    assert ann.get(f"/projects/demo/annotations/{aid}").status_code == 200
    assert eve.get(f"/projects/demo/annotations/{aid}").status_code == 404
    assert eve.get("/projects/demo/annotations/99999").status_code == 404
    assert str(aid) not in re.sub(r"\s+", " ", eve.get("/projects/demo/history").text).split("<tbody>")[1].split("</tbody>")[0]


def test_index_lists_projects_with_progress_and_login_is_required(client, make_user, make_project):
    make_project("demo", n_tasks=4, k=2)
    assert client.get("/").status_code == 302
    assert client.get("/projects/demo/annotate").headers["Location"].startswith("/login?next=")
    make_user("ann")
    login(client, "ann")
    html = client.get("/").text
    assert 'data-testid="done-demo">0<' in html and 'data-testid="remaining-demo">4<' in html
    assert client.get("/projects/nope/annotate").status_code == 404


def test_done_page_when_nothing_is_left(client, make_user, make_project):
    make_project("tiny", n_tasks=1, k=2)
    make_user("ann")
    login(client, "ann")
    _, task_id, shown, token = open_task(client, "tiny")
    client.post(f"/projects/tiny/tasks/{task_id}/submit", json={"ranking": {str(shown[0]): 1, str(shown[1]): 2}}, headers={"X-CSRF-Token": token})
    assert "Nothing left to label" in client.get("/projects/tiny/annotate").text
