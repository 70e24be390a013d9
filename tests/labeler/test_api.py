"""The JSON API through Flask's test client: tokens, validation errors naming the field, ownership
(404 for anyone else's annotation), admin-only calls, and an OpenAPI document covering every route."""

import io
import re
import zipfile

import pytest
from sqlalchemy import func, select

from labeler.models import Annotation, Task


@pytest.fixture
def people(make_user, auth_header):
    admin, alice, bob = make_user("admin", role="admin"), make_user("alice"), make_user("bob")
    return {"admin": auth_header(admin), "alice": auth_header(alice), "bob": auth_header(bob)}


def rank_in_display_order(task: dict) -> dict:
    return {str(r["id"]): i + 1 for i, r in enumerate(task["responses"])}


def test_calls_without_a_valid_token_get_401(client, make_project):
    make_project("demo")
    for path in ("/api/v1/projects", "/api/v1/projects/demo/next", "/api/v1/annotations/1", "/api/v1/projects/demo/stats"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["field"] == "Authorization"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/api/v1/projects", headers={"Authorization": "Bearer lbl_not-a-real-token"})
    assert response.status_code == 401
    response = client.post("/api/v1/tasks/1/annotations", json={"ranking": {}}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_post_without_any_token_writes_nothing(client, db):
    from labeler.models import Project

    # the API reads no cookies, so CSRF does not apply: the missing token is what is refused
    response = client.post("/api/v1/projects", json={"name": "sneaky"})
    assert response.status_code == 401 and response.is_json
    with db.read() as session:
        assert session.scalar(select(func.count(Project.id))) == 0


def test_deactivated_users_token_stops_working(client, db, make_user, auth_header):
    from labeler.models import User

    carol = make_user("carol")
    header = auth_header(carol)
    assert client.get("/api/v1/projects", headers=header).status_code == 200
    with db.write() as session:
        session.get(User, carol.id).active = False
    assert client.get("/api/v1/projects", headers=header).status_code == 401


def test_admin_creates_project_pushes_tasks_and_annotator_labels(client, db, people, task_rows):
    body = {"name": "api-demo", "k": 3, "overlap": 2, "criteria": ["helpful"], "guidelines": "# Be kind", "lease_seconds": 120}
    response = client.post("/api/v1/projects", json=body, headers=people["admin"])
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["project"]["criteria"] == ["helpful"]
    assert client.post("/api/v1/projects", json=body, headers=people["admin"]).status_code == 409
    assert [p["name"] for p in client.get("/api/v1/projects", headers=people["alice"]).get_json()["projects"]] == ["api-demo"]

    tasks = task_rows(2, k=3)
    response = client.post("/api/v1/projects/api-demo/tasks", json={"tasks": tasks}, headers=people["admin"])
    assert response.status_code == 201 and response.get_json() == {"created": 2, "skipped": 0}
    assert client.post("/api/v1/projects/api-demo/tasks", json={"tasks": tasks}, headers=people["admin"]).get_json() == {"created": 0, "skipped": 2}

    got = client.get("/api/v1/projects/api-demo/next", headers=people["alice"]).get_json()
    task = got["task"]
    assert got["done"] == 0 and got["remaining"] == 2
    assert task["project"] == "api-demo" and task["prompt"] == "prompt 0" and len(task["responses"]) == 3
    assert {r["text"] for r in task["responses"]} == {"answer 0.0", "answer 0.1", "answer 0.2"}
    assert task["lease_expires_at"].endswith("Z")
    # asking again returns the same task in the same order, and renews the lease (README: "renew the one they hold")
    again = client.get("/api/v1/projects/api-demo/next", headers=people["alice"]).get_json()["task"]
    assert again["lease_expires_at"] > task["lease_expires_at"]
    assert {**again, "lease_expires_at": None} == {**task, "lease_expires_at": None}

    payload = {"ranking": rank_in_display_order(task), "scores": {"helpful": {str(task["responses"][0]["id"]): 4}},
               "rationale": "first is clearest", "seconds_spent": 12.5}
    response = client.post(f"/api/v1/tasks/{task['id']}/annotations", json=payload, headers=people["alice"])
    assert response.status_code == 201
    annotation = response.get_json()["annotation"]
    assert annotation["task_id"] == task["id"] and annotation["ranking"] == payload["ranking"]
    assert annotation["display_order"] == [r["id"] for r in task["responses"]]
    # the retry of a double click: 200 and still one annotation
    again = client.post(f"/api/v1/tasks/{task['id']}/annotations", json=payload, headers=people["alice"])
    assert again.status_code == 200 and again.get_json()["annotation"]["id"] == annotation["id"]
    with db.read() as session:
        assert session.scalar(select(func.count(Annotation.id))) == 1

    assert client.get(f"/api/v1/annotations/{annotation['id']}", headers=people["alice"]).get_json()["annotation"]["rationale"] == "first is clearest"
    stats = client.get("/api/v1/projects/api-demo/stats", headers=people["admin"]).get_json()
    assert stats["counts"]["annotations"] == 1 and stats["counts"]["tasks"] == 2 and "quality" in stats
    mine = client.get("/api/v1/projects/api-demo/stats", headers=people["alice"]).get_json()
    assert mine["you"]["done"] == 1 and mine["you"]["seconds"] == 12.5 and "quality" not in mine


def test_other_users_annotation_is_404_and_unassigned_task_409(client, make_project, people):
    make_project("demo", n_tasks=2)
    task = client.get("/api/v1/projects/demo/next", headers=people["alice"]).get_json()["task"]
    created = client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": rank_in_display_order(task)}, headers=people["alice"])
    annotation_id = created.get_json()["annotation"]["id"]
    response = client.get(f"/api/v1/annotations/{annotation_id}", headers=people["bob"])
    assert response.status_code == 404
    assert response.get_json() == client.get("/api/v1/annotations/999999", headers=people["bob"]).get_json() | {
        "error": f"field 'annotation_id': annotation {annotation_id} not found"}
    assert client.get(f"/api/v1/annotations/{annotation_id}", headers=people["admin"]).status_code == 200
    # bob cannot write onto alice's task (overlap 1, alice holds it): no lease -> 409
    response = client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": rank_in_display_order(task)}, headers=people["bob"])
    assert response.status_code == 409
    assert client.post("/api/v1/tasks/424242/annotations", json={"ranking": {}}, headers=people["bob"]).status_code == 404
    assert client.get("/api/v1/projects/nope/next", headers=people["bob"]).status_code == 404



def test_a_submissions_answer_is_the_annotation_as_stored(client, make_project, people):
    """The POST answers from the values it wrote (plain rows, labeler.assignment.StoredAnnotation), the GET reads
    the row back: the two agree for a new annotation, a retry and a change."""
    make_project("demo", n_tasks=1, k=3, criteria=["helpful"])
    task = client.get("/api/v1/projects/demo/next", headers=people["alice"]).get_json()["task"]
    ids = [str(r["id"]) for r in task["responses"]]
    url = f"/api/v1/tasks/{task['id']}/annotations"

    def stored(answer):
        annotation = answer.get_json()["annotation"]
        assert annotation == client.get(f"/api/v1/annotations/{annotation['id']}", headers=people["alice"]).get_json()["annotation"]
        return annotation

    first = {"ranking": {ids[0]: 1, ids[1]: 2, ids[2]: 2}, "scores": {"helpful": {ids[0]: 4}}, "seconds_spent": 2}
    created = client.post(url, json=first, headers=people["alice"])
    assert created.status_code == 201
    annotation = stored(created)
    assert annotation["version"] == 1 and annotation["seconds_spent"] == 2.0 and annotation["edited_response"] is None
    assert annotation["display_order"] == [r["id"] for r in task["responses"]]
    retry = client.post(url, json=first, headers=people["alice"])
    assert retry.status_code == 200 and stored(retry) == annotation
    change = {"ranking": {ids[0]: 3, ids[1]: 1, ids[2]: 2}, "all_bad": True, "rationale": "on reflection",
              "edited_response": "better", "seconds_spent": 1.5, "version": 1}
    changed = client.post(url, json=change, headers=people["alice"])
    assert changed.status_code == 200
    after = stored(changed)
    assert after["version"] == 2 and after["id"] == annotation["id"] and after["created_at"] == annotation["created_at"]
    assert after["scores"] == {} and after["all_bad"]
    assert {key: after[key] for key in ("ranking", "rationale", "edited_response", "seconds_spent")} == {
        key: change[key] for key in ("ranking", "rationale", "edited_response", "seconds_spent")}

@pytest.mark.parametrize("mutate, field", [
    (lambda p, ids: p.update(ranking={ids[0]: 1}), "ranking"),
    (lambda p, ids: p.update(ranking={ids[0]: 1, ids[1]: "first"}), "ranking.{1}"),
    (lambda p, ids: p.update(seconds_spent="a while"), "seconds_spent"),
    (lambda p, ids: p.update(scores={"tone": {}}), "scores.tone"),
    (lambda p, ids: p.update(extra=1), "extra"),
])
def test_validation_errors_name_the_field(client, make_project, people, mutate, field):
    make_project("demo", n_tasks=1, criteria=["helpful"])
    task = client.get("/api/v1/projects/demo/next", headers=people["alice"]).get_json()["task"]
    ids = [str(r["id"]) for r in task["responses"]]
    payload = {"ranking": {ids[0]: 1, ids[1]: 2}}
    mutate(payload, ids)
    response = client.post(f"/api/v1/tasks/{task['id']}/annotations", json=payload, headers=people["alice"])
    assert response.status_code == 422
    assert response.get_json()["field"] == field.format(*ids)
    assert field.format(*ids) in response.get_json()["error"]


def test_non_json_body_and_bad_project_fields(client, people, make_project):
    make_project("demo", n_tasks=1)
    response = client.post("/api/v1/tasks/1/annotations", data="ranking=1", headers=people["alice"])
    assert response.status_code == 400 and response.get_json()["field"] == "body"
    response = client.post("/api/v1/projects", json={"name": "x", "k": "three"}, headers=people["admin"])
    assert response.status_code == 422 and response.get_json()["field"] == "k"
    response = client.post("/api/v1/projects", json={"name": "has space"}, headers=people["admin"])
    assert response.status_code == 422 and response.get_json()["field"] == "name"
    response = client.post("/api/v1/projects/demo/tasks", json={"tasks": [{"prompt": "p", "responses": [{"text": "a"}]}]}, headers=people["admin"])
    assert response.status_code == 422 and response.get_json()["field"] == "tasks[0].responses"
    assert "tasks[0]" in response.get_json()["error"]


def test_non_admins_get_403_on_push_create_and_export(client, make_project, people, task_rows, db):
    make_project("demo", n_tasks=1)
    for path, body in (("/api/v1/projects", {"name": "mine"}), ("/api/v1/projects/demo/tasks", {"tasks": task_rows(1, prefix="x")}),
                       ("/api/v1/projects/demo/exports", {})):
        response = client.post(path, json=body, headers=people["alice"])
        assert response.status_code == 403, path
    assert client.get("/api/v1/exports/1/download", headers=people["alice"]).status_code == 403
    with db.read() as session:
        assert session.scalar(select(func.count(Task.id))) == 1


def test_export_through_the_api_and_download_zip(client, make_project, people):
    make_project("demo", n_tasks=2, overlap=1)
    for _ in range(2):
        task = client.get("/api/v1/projects/demo/next", headers=people["alice"]).get_json()["task"]
        client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": rank_in_display_order(task)}, headers=people["alice"])
    response = client.post("/api/v1/projects/demo/exports", json={"aggregation": "wisdom"}, headers=people["admin"])
    assert response.status_code == 422 and response.get_json()["field"] == "aggregation"
    response = client.post("/api/v1/projects/demo/exports", json={"test_fraction": 0.0}, headers=people["admin"])
    assert response.status_code == 201, response.get_json()
    export = response.get_json()["export"]
    assert len(export["content_hash"]) == 64
    download = client.get(export["download_url"], headers=people["admin"])
    assert download.status_code == 200 and download.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.data)).namelist()
    assert names and all(not n.startswith("/") for n in names)
    assert client.get("/api/v1/exports/999/download", headers=people["admin"]).status_code == 404


def test_openapi_lists_every_api_route(app, client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in doc["paths"][path], f"{method} {path}"
    schemas = doc["components"]["schemas"]
    assert set(schemas["AnnotationIn"]["properties"]) == {"ranking", "all_bad", "scores", "rationale", "edited_response", "seconds_spent", "version"}


def test_unknown_api_urls_answer_json_and_pages_stay_html(client, people):
    resp = client.get("/api/v1/no-such-thing", headers=people["alice"])
    assert resp.status_code == 404
    assert resp.is_json and "/api/v1/no-such-thing" in resp.get_json()["error"]
    resp = client.delete("/api/v1/projects", headers=people["alice"])
    assert resp.status_code == 405 and resp.is_json
    page = client.get("/no-such-page")
    assert page.status_code == 404 and not page.is_json
