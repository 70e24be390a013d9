"""Admin pages: annotators get 403, the quality table and charts render, gold marking, exports."""

import re

import pytest
from conftest import PASSWORD
from sqlalchemy import select

from labeler.db import get_db
from labeler.models import Export, Task


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client, username):
    token = csrf_from(client.get("/login").text)
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token}).status_code == 302
    return csrf_from(client.get("/").text)


@pytest.fixture
def labeled(app, make_user, make_project):
    """Project 'demo' (3 tasks, K=3, overlap 2) fully labeled by ann and bob, who agree on every task."""
    make_user("boss", role="admin"), make_user("ann"), make_user("bob")
    make_project("demo", n_tasks=3, k=3, overlap=2)
    for name in ("ann", "bob"):
        c = app.test_client()
        token = login(c, name)
        for _ in range(3):
            html = c.get("/projects/demo/annotate").text
            task_id = int(re.search(r'data-task-id="(\d+)"', html).group(1))
            with get_db(app).read() as s:
                ids = [r.id for r in s.get(Task, task_id).responses]  # import order: best first for both
            body = {"ranking": {str(r): i + 1 for i, r in enumerate(ids)}, "seconds_spent": 10}
            assert c.post(f"/projects/demo/tasks/{task_id}/submit", json=body, headers={"X-CSRF-Token": token}).status_code == 200
    return app


def test_annotator_gets_403_and_anonymous_gets_login(client, make_user, make_project):
    make_project("demo")
    assert client.get("/admin").headers["Location"].startswith("/login")
    make_user("ann")
    token = login(client, "ann")
    for path in ("/admin", "/admin/projects/demo", "/admin/exports/1/download"):
        assert client.get(path).status_code == 403, path
    assert client.post("/admin/projects/demo/exports", data={"csrf_token": token}).status_code == 403
    assert 'href="/admin"' not in client.get("/").text


def test_dashboard_and_project_page_show_counts_quality_and_charts(labeled):
    c = labeled.test_client()
    login(c, "boss")
    dash = c.get("/admin").text
    assert re.search(r"<strong>demo</strong>", dash) and "6 / 6" in dash  # annotations / needed
    page = c.get("/admin/projects/demo").text
    table = page.split('id="annotators"')[1].split("</table>")[0]
    assert "ann" in table and "bob" in table
    assert 'data-testid="pairwise-agreement">100%<' in page  # they agree on every pair
    assert page.count("<svg") == 5 and "Position bias" in page
    assert "<script" not in page.split("</main>")[0]


def test_mark_gold_with_a_ranking(labeled):
    c = labeled.test_client()
    token = login(c, "boss")
    with get_db(labeled).read() as s:
        task = s.scalars(select(Task).order_by(Task.id)).first()
        ids = [r.id for r in task.responses]
    missing = c.post(f"/admin/projects/demo/tasks/{task.id}/gold", data={"csrf_token": token, f"rank-{ids[0]}": "1"}, follow_redirects=True)
    assert "needs a rank" in missing.text
    form = {"csrf_token": token, f"rank-{ids[0]}": "2", f"rank-{ids[1]}": "1", f"rank-{ids[2]}": "3"}
    assert c.post(f"/admin/projects/demo/tasks/{task.id}/gold", data=form).status_code == 302
    with get_db(labeled).read() as s:
        stored = s.get(Task, task.id)
        assert stored.is_gold and stored.gold_ranking == {str(ids[0]): 2, str(ids[1]): 1, str(ids[2]): 3}
    assert c.post(f"/admin/projects/demo/tasks/{task.id}/gold", data={"csrf_token": token}).status_code == 302  # no action: invalid, flashed
    c.post(f"/admin/projects/demo/tasks/{task.id}/gold", data={"csrf_token": token, "action": "clear"})
    with get_db(labeled).read() as s:
        assert not s.get(Task, task.id).is_gold


def test_export_from_the_admin_page_is_listed_and_downloadable(labeled):
    c = labeled.test_client()
    token = login(c, "boss")
    assert c.post("/admin/projects/demo/exports", data={"aggregation": "majority"}).status_code == 400  # no CSRF token
    page = c.post("/admin/projects/demo/exports", data={"csrf_token": token, "aggregation": "majority", "test_fraction": "0"},
                  follow_redirects=True).text
    with get_db(labeled).read() as s:
        export = s.scalar(select(Export))
    assert export is not None and export.content_hash[:16] in page
    assert f'href="/admin/exports/{export.id}/download"' in page
    download = c.get(f"/admin/exports/{export.id}/download")
    assert download.status_code == 200 and download.data[:2] == b"PK"
    bad = c.post("/admin/projects/demo/exports", data={"csrf_token": token, "min_agreement": "lots"}, follow_redirects=True)
    assert "Export failed" in bad.text and "min_agreement" in bad.text
