"""The hostile inputs of issue 11, each answered with a 4xx that names the field, with the database
unchanged afterwards (every row of every table compared), on the API and the web pages alike."""

import json
import re

import pytest
from click.testing import CliRunner
from conftest import PASSWORD
from sqlalchemy import select

from labeler.cli import main
from labeler.db import Base
from labeler.errors import MAX_ID
from labeler.models import Export

BIG = 2**63  # one past the largest signed 64-bit id (and far past MAX_ID, the largest INTEGER)
DIGITS_400 = "9" * 400
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def snapshot(db) -> dict:
    """Every row of every table: the database is unchanged iff two snapshots are equal."""
    with db.read() as session:
        return {table.name: sorted(map(tuple, session.execute(select(table)).all()), key=repr) for table in Base.metadata.sorted_tables}


@pytest.fixture
def world(db, app, make_user, make_project, auth_header):
    """Project 'demo' (k=2, criterion 'helpful') with one annotation by alice (task 1), and tokens."""
    admin, alice = make_user("admin", role="admin"), make_user("alice")
    make_project("demo", n_tasks=2, k=2, criteria=["helpful"])
    headers = {"admin": auth_header(admin), "alice": auth_header(alice)}
    client = app.test_client()
    task = client.get("/api/v1/projects/demo/next", headers=headers["alice"]).get_json()["task"]
    ranking = {str(r["id"]): i + 1 for i, r in enumerate(task["responses"])}
    done = client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": ranking, "rationale": "kept"}, headers=headers["alice"])
    assert done.status_code == 201
    # alice's lease on the second task, so a submission there is a first one that the server would store
    open_task = client.get("/api/v1/projects/demo/next", headers=headers["alice"]).get_json()["task"]
    return {"client": client, "headers": headers, "task": task, "ranking": ranking, "open_task": open_task,
            "open_ranking": {str(r["id"]): i + 1 for i, r in enumerate(open_task["responses"])},
            "annotation": done.get_json()["annotation"]}


def assert_refused(db, before, response, status, field):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.is_json, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["field"] == field and field in body["error"], body
    assert snapshot(db) == before


def raw(client, method, path, data, headers):
    return client.open(path, method=method, data=data, headers={**headers, "Content-Type": "application/json"})


def test_ids_beyond_signed_64_bit_in_api_urls_are_404_naming_the_field(db, world):
    client, admin, alice = world["client"], world["headers"]["admin"], world["headers"]["alice"]
    before = snapshot(db)
    for big in (BIG, int(DIGITS_400)):
        assert_refused(db, before, client.post(f"/api/v1/tasks/{big}/annotations", json={"ranking": world["ranking"]}, headers=alice),
                       404, "task_id")
        assert_refused(db, before, client.get(f"/api/v1/annotations/{big}", headers=alice), 404, "annotation_id")
        assert_refused(db, before, client.get(f"/api/v1/exports/{big}/download", headers=admin), 404, "export_id")
    # the largest id is still an id: plainly not found
    assert_refused(db, before, client.get(f"/api/v1/annotations/{BIG - 1}", headers=alice), 404, "annotation_id")


def test_ids_beyond_signed_64_bit_in_web_urls_are_404_pages(db, app, world):
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token}).status_code == 302
    before = snapshot(db)
    for path, field in ((f"/projects/demo/annotations/{BIG}", "annotation_id"), (f"/admin/projects/demo/tasks/{BIG}", "task_id"),
                        (f"/admin/exports/{BIG}/download", "export_id")):
        page = client.get(path)
        assert page.status_code == 404 and not page.is_json and field in page.text, path
        assert_refused(db, before, client.get(path, headers={"Accept": "application/json"}), 404, field)


@pytest.mark.parametrize("body, field", [
    ({"seconds_spent": int(DIGITS_400)}, "seconds_spent"),
    ({"seconds_spent": 1e308 * 10}, "body"),  # json.dumps writes Infinity: not JSON
    ({"rationale": 0}, "rationale"),
    ({"scores": []}, "scores"),
    ({"scores": {"helpful": []}}, "scores.helpful"),
    ({"rationale": "a\ud800b"}, "rationale"),
    ({"edited_response": "fine \udfff"}, "edited_response"),
    ({"rationale": "nul \u0000 inside"}, "rationale"),  # PostgreSQL's text cannot hold a NUL
    ({"version": BIG}, "version"),
    ({"ranking": None}, "ranking"),
])
def test_hostile_annotation_fields_are_refused_and_write_nothing(db, world, body, field):
    before = snapshot(db)
    payload = {"ranking": world["open_ranking"], **body}
    data = json.dumps(payload)  # ensure_ascii: a lone surrogate travels as the escape \ud800
    response = raw(world["client"], "POST", f"/api/v1/tasks/{world['open_task']['id']}/annotations", data, world["headers"]["alice"])
    assert_refused(db, before, response, 400 if field == "body" else 422, field)


@pytest.mark.parametrize("body, field", [
    ({"name": "p", "criteria": None}, "criteria"),
    ({"name": "p", "criteria": 5}, "criteria"),
    ({"name": "p", "criteria": ["a", "a"]}, "criteria"),
    ({"name": "p", "lease_seconds": 1e20}, "lease_seconds"),
    ({"name": "p", "lease_seconds": 1_000_000_000_000}, "lease_seconds"),
    ({"name": "p", "lease_seconds": int(DIGITS_400)}, "lease_seconds"),
    ({"name": "p", "overlap": 1706.5}, "overlap"),
    ({"name": "p", "k": True}, "k"),
    ({"name": "p", "k": "3"}, "k"),
    ({"name": "p", "guidelines": "x\ud800"}, "guidelines"),
    ({"name": "p", "colour": "red"}, "colour"),
    ({"k": 2}, "name"),
])
def test_hostile_project_fields_are_refused_and_write_nothing(db, world, body, field):
    before = snapshot(db)
    response = raw(world["client"], "POST", "/api/v1/projects", json.dumps(body), world["headers"]["admin"])
    assert_refused(db, before, response, 422, field)


def test_whole_floats_are_integers_as_the_schema_says(db, world):
    # JSON Schema's integer includes 17.0: the server takes what its document allows
    response = world["client"].post("/api/v1/projects", json={"name": "floaty", "overlap": 17.0, "k": 3.0}, headers=world["headers"]["admin"])
    assert response.status_code == 201
    assert (response.get_json()["project"]["overlap"], response.get_json()["project"]["k"]) == (17, 3)


@pytest.mark.parametrize("body, field", [
    ({"tasks": []}, "tasks"),
    ({"tasks": None}, "tasks"),
    ({"tasks": [{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "gold_ranking": [1, 3]}]}, "gold_ranking"),
    ({"tasks": [{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}]}, "responses"),
    ({"tasks": [{"prompt": "p", "responses": [{"text": "a\ud800"}, {"text": "b"}]}]}, "tasks[0].responses[0].text"),
    ({"tasks": [{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "meta": {"k\udc00": 1}}]}, "tasks[0].meta"),
    ({"tasks": [{"prompt": 7, "responses": [{"text": "a"}, {"text": "b"}]}]}, "tasks[0].prompt"),
])
def test_hostile_tasks_are_refused_and_write_nothing(db, world, body, field):
    before = snapshot(db)
    response = raw(world["client"], "POST", "/api/v1/projects/demo/tasks", json.dumps(body), world["headers"]["admin"])
    assert_refused(db, before, response, 422, field)


@pytest.mark.parametrize("body, field", [
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"min_agreement": 1.5}, "min_agreement"),
    ({"aggregation": "mean"}, "aggregation"),
    ({"min_gold_accuracy": "high"}, "min_gold_accuracy"),
])
def test_hostile_export_filters_are_refused_and_write_nothing(db, world, body, field):
    before = snapshot(db)
    response = raw(world["client"], "POST", "/api/v1/projects/demo/exports", json.dumps(body), world["headers"]["admin"])
    assert_refused(db, before, response, 422, field)


def test_json_nested_100000_deep_is_400_on_every_json_endpoint(db, world):
    client, admin, alice = world["client"], world["headers"]["admin"], world["headers"]["alice"]
    before = snapshot(db)
    for method, path, headers in (("POST", "/api/v1/projects", admin), ("POST", "/api/v1/projects/demo/tasks", admin),
                                  ("POST", f"/api/v1/tasks/{world['open_task']['id']}/annotations", alice),
                                  ("POST", "/api/v1/projects/demo/exports", admin)):
        for body in (DEEP, DEEP_OBJECT):
            assert_refused(db, before, raw(client, method, path, body, headers), 400, "body")
        # deep enough to refuse, shallow enough to parse: the error names the path where the limit is passed
        assert_refused(db, before, raw(client, method, path, '{"meta": ' + "[" * 40 + "]" * 40 + "}", headers), 400, "meta" + "[0]" * 31)


@pytest.mark.parametrize("data", [b'{"rationale": NaN}', b'{"seconds_spent": Infinity}', b"\xff\xfe{}", b'{"x": 1' + b"0" * 5000 + b"}", b"[1, 2]", b'"text"'])
def test_bodies_that_are_not_strict_json_objects_are_400(db, world, data):
    before = snapshot(db)
    response = raw(world["client"], "POST", f"/api/v1/tasks/{world['open_task']['id']}/annotations", data, world["headers"]["alice"])
    assert_refused(db, before, response, 400, "body")


def test_annotation_page_submit_refuses_the_same_inputs(db, app, world):
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 302
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)  # the session's new token
    path = f"/projects/demo/tasks/{world['open_task']['id']}/submit"
    before = snapshot(db)
    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    assert_refused(db, before, client.post(path, data=DEEP, headers=headers), 400, "body")
    assert_refused(db, before, client.post(path, data=json.dumps({"ranking": world["open_ranking"], "rationale": "\ud800"}), headers=headers),
                   422, "rationale")
    assert_refused(db, before, client.post(path, data=json.dumps({"ranking": world["open_ranking"], "scores": []}), headers=headers),
                   422, "scores")
    # the no-JavaScript form: a rank of 400 digits is refused by name (flashed), not a 500
    rid = next(iter(world["open_ranking"]))
    response = client.post(path, data={"csrf_token": token, f"rank-{rid}": DIGITS_400, "seconds_spent": "1e999"})
    assert response.status_code == 302 and snapshot(db) == before
    assert client.get(f"/projects/demo/annotations/{BIG}").status_code == 404


def test_test_fraction_one_is_refused_by_the_api_the_admin_page_and_the_cli(db, db_url, app, world, tmp_path):
    before = snapshot(db)
    response = world["client"].post("/api/v1/projects/demo/exports", json={"test_fraction": 1.0}, headers=world["headers"]["admin"])
    assert_refused(db, before, response, 422, "test_fraction")
    admin = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', admin.get("/login").text).group(1)
    admin.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    admin.post("/admin/projects/demo/exports", data={"csrf_token": token, "test_fraction": "1.0"})
    assert "test_fraction" in admin.get("/admin/projects/demo").text
    result = CliRunner().invoke(main, ["export", "--project", "demo", "--out", str(tmp_path / "out"), "--test-fraction", "1.0", "--db", db_url])
    assert result.exit_code == 1 and "test_fraction" in result.output
    with db.read() as session:
        assert session.scalars(select(Export)).all() == []
    after = snapshot(db)
    assert [row[2] for row in after.pop("audit_event")] == ["login"]  # the admin's login is audited; no export is
    before.pop("audit_event")
    assert after == before


def test_the_document_states_what_the_server_enforces(world):
    doc = world["client"].get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    assert schemas["TasksIn"]["properties"]["tasks"]["minItems"] == 1 and schemas["TasksIn"]["required"] == ["tasks"]
    assert schemas["ProjectIn"]["properties"]["overlap"]["type"] == "integer"
    assert schemas["ProjectIn"]["properties"]["lease_seconds"]["maximum"] == 30 * 24 * 3600
    assert schemas["AnnotationIn"]["else"] == {"required": ["ranking"]}  # required unless all_bad
    assert schemas["AnnotationIn"]["properties"]["version"]["anyOf"][0]["maximum"] == MAX_ID == 2**31 - 1
    task_id = doc["paths"]["/api/v1/tasks/{task_id}/annotations"]["post"]["parameters"][0]["schema"]
    assert task_id == {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def logged_in(app, username: str):
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token}).status_code == 302
    return client, re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)


@pytest.mark.parametrize("field_value", [("rank-{rid}", "²"), ("rank-{rid}", DIGITS_400), ("score-0-{rid}", "9" * 30),
                                         ("score-0-{rid}", "6"), ("seconds_spent", "nan"), ("version", "²"), ("rationale", "a\x00b")])
def test_hostile_annotation_forms_are_refused_and_write_nothing(db, app, world, field_value):
    # the no-JavaScript form: odd keys and values are refused by name, never a 500
    client, token = logged_in(app, "alice")
    rid = next(iter(world["open_ranking"]))
    key, value = field_value[0].format(rid=rid), field_value[1]
    form = {"csrf_token": token, **{f"rank-{r}": str(rank) for r, rank in world["open_ranking"].items()}, key: value}
    before = snapshot(db)
    response = client.post(f"/projects/demo/tasks/{world['open_task']['id']}/submit", data=form, headers={"Accept": "application/json"})
    assert response.status_code == 422 and response.is_json, response.get_data(as_text=True)[:300]
    assert response.get_json()["field"].split(".")[0] in (key.split("-")[0].replace("rank", "ranking").replace("score", "scores"), key)
    assert snapshot(db) == before


def test_malformed_score_keys_in_the_form_are_ignored_not_a_500(db, app, world):
    client, token = logged_in(app, "alice")
    form = {"csrf_token": token, **{f"rank-{r}": str(rank) for r, rank in world["open_ranking"].items()}, "score-0": "3", "score-x-1": "3"}
    before = len(snapshot(db)["annotation"])
    response = client.post(f"/projects/demo/tasks/{world['open_task']['id']}/submit", data=form)
    assert response.status_code == 302 and len(snapshot(db)["annotation"]) == before + 1


def test_hostile_gold_form_is_refused_and_writes_nothing(db, app, world):
    client, token = logged_in(app, "admin")
    task_id = world["open_task"]["id"]
    before = snapshot(db)
    form = {"csrf_token": token, **{f"rank-{r}": "²" for r in world["open_ranking"]}}
    response = client.post(f"/admin/projects/demo/tasks/{task_id}/gold", data=form)
    assert response.status_code == 302 and snapshot(db) == before
    assert "needs a rank from 1 to 2" in client.get(f"/admin/projects/demo/tasks/{task_id}").text
