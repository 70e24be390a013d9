"""Importing the tasks JSONL contract: whole-file validation, line numbers in errors, idempotence, gold."""

import json

import pytest
from sqlalchemy import func, select

from labeler.errors import LabelerError
from labeler.importer import import_tasks, validate_tasks_file
from labeler.models import Prompt, Response, Task
from labeler.projects import create_project, find_project


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def count(db, model):
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_bad_line_names_file_line_and_field(tmp_path, task_rows):
    rows = task_rows(4)
    rows[2]["responses"][1] = {"text": 42}  # line 3
    path = write_jsonl(tmp_path / "tasks.jsonl", rows)
    with pytest.raises(LabelerError) as err:
        validate_tasks_file(path, k=2)
    assert f"{path}:3:" in str(err.value)
    assert "responses[1].text" in str(err.value)
    assert err.value.field == "responses[1].text"


def test_invalid_json_line_is_reported_with_its_number(tmp_path, task_rows):
    path = write_jsonl(tmp_path / "tasks.jsonl", [task_rows(1)[0], "", '{"prompt": "x", '])
    with pytest.raises(LabelerError, match=r"tasks.jsonl:3: not valid JSON"):
        validate_tasks_file(path)


def test_k_mismatch_is_refused(tmp_path, task_rows):
    path = write_jsonl(tmp_path / "tasks.jsonl", task_rows(2, k=3))
    assert len(validate_tasks_file(path, k=3)) == 2
    with pytest.raises(LabelerError, match=r"tasks.jsonl:1: field 'responses': has 3 responses but the project ranks k=2"):
        validate_tasks_file(path, k=2)


def test_unknown_keys_and_bad_messages_are_refused(tmp_path, task_rows):
    typo = {**task_rows(1)[0], "respones": []}
    with pytest.raises(LabelerError, match="field 'respones': unknown key"):
        validate_tasks_file(write_jsonl(tmp_path / "a.jsonl", [typo]))
    chat = {"prompt": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}], "responses": [{"text": "a"}, {"text": "b"}]}
    with pytest.raises(LabelerError, match=r"field 'prompt\[1\]\.role'"):
        validate_tasks_file(write_jsonl(tmp_path / "b.jsonl", [chat]))


def test_import_is_idempotent_and_dedups_prompts(db, task_rows):
    tasks = task_rows(3)
    # same prompt, different responses: a second task sharing the first one's Prompt row
    tasks.append({"prompt": "prompt 0", "responses": [{"text": "other a"}, {"text": "other b"}]})
    with db.write() as session:
        project = create_project(session, "demo", k=2)
        assert import_tasks(session, project, tasks) == {"created": 4, "skipped": 0}
    with db.write() as session:
        assert import_tasks(session, find_project(session, "demo"), tasks + task_rows(1, prefix="new")) == {"created": 1, "skipped": 4}
    assert count(db, Task) == 5
    assert count(db, Prompt) == 4
    assert count(db, Response) == 10


def test_a_bad_task_in_a_batch_writes_nothing(db, task_rows):
    tasks = task_rows(3)
    tasks[2]["responses"] = tasks[2]["responses"][:1]
    with pytest.raises(LabelerError, match=r"tasks\[2\]: field 'responses'"):
        with db.write() as session:
            import_tasks(session, create_project(session, "demo", k=2), tasks)
    assert count(db, Task) == 0


def test_gold_ranking_maps_file_order_to_response_ids(db):
    task = {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
            "responses": [{"text": "5"}, {"text": "4"}, {"text": "four"}], "gold_ranking": [3, 1, 1]}
    with db.write() as session:
        import_tasks(session, create_project(session, "gold", k=3), [task])
    with db.read() as session:
        row = session.scalars(select(Task)).one()
        ids = [r.id for r in row.responses]
        assert row.is_gold
        assert row.gold_ranking == {str(ids[0]): 3, str(ids[1]): 1, str(ids[2]): 1}
        assert row.prompt.prompt[1] == {"role": "user", "content": "2+2?"}


def test_cli_import_bad_line_writes_nothing_and_exits_1(runner, db_url, db, tmp_path, task_rows):
    from labeler.cli import main

    assert runner.invoke(main, ["projects", "create", "demo", "--k", "2", "--db", db_url]).exit_code == 0
    rows = task_rows(5)
    rows[3]["gold_ranking"] = [1, 7]
    path = write_jsonl(tmp_path / "tasks.jsonl", rows)
    result = runner.invoke(main, ["import", str(path), "--project", "demo", "--db", db_url])
    assert result.exit_code == 1
    assert result.output.strip().startswith("labeler: error: ")
    assert f"{path}:4: field 'gold_ranking'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert count(db, Task) == 0
