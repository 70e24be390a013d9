"""The labeler's whole path as a team uses it: `labeler import` a tasks file, two annotators label through
the JSON API, `labeler export`, and TRL's preference set holds exactly the pairs their rankings imply."""

import json

import datasets

from labeler.cli import main as labeler_main

TASKS = [
    {"prompt": "Name a fruit.", "responses": [{"text": "apple", "model": "m"}, {"text": "rock", "model": "m"},
                                               {"text": "banana", "model": "m"}]},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
     "responses": [{"text": "hi", "model": "m"}, {"text": "Greetings, dear user, how do you do?", "model": "m"},
                   {"text": "", "model": "m"}]},
]
# Rankings by response text (1 = best; equal numbers tie).
ALICE = {"Name a fruit.": {"apple": 1, "banana": 2, "rock": 3},
         "Say hi.": {"hi": 1, "Greetings, dear user, how do you do?": 2, "": 3}}
BOB = {"Name a fruit.": {"banana": 1, "apple": 2, "rock": 3},
       "Say hi.": {"hi": 1, "Greetings, dear user, how do you do?": 1, "": 3}}


def last_user_text(prompt):
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def test_import_label_through_api_export_gives_the_implied_pairs(tmp_path, db_url, runner, client, make_user, auth_header):
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    assert runner.invoke(labeler_main, ["projects", "create", "fruit", "--k", "3", "--overlap", "2", "--db", db_url]).exit_code == 0
    result = runner.invoke(labeler_main, ["import", str(tasks_file), "--project", "fruit", "--db", db_url])
    assert result.exit_code == 0, result.output

    for name, ranks in (("alice", ALICE), ("bob", BOB)):
        headers = auth_header(make_user(name))
        for _ in TASKS:
            task = client.get("/api/v1/projects/fruit/next", headers=headers).get_json()["task"]
            wanted = ranks[last_user_text(task["prompt"])]
            ranking = {str(r["id"]): wanted[r["text"]] for r in task["responses"]}
            response = client.post(f"/api/v1/tasks/{task['id']}/annotations", json={"ranking": ranking}, headers=headers)
            assert response.status_code == 201, response.get_json()
        assert client.get("/api/v1/projects/fruit/next", headers=headers).get_json()["task"] is None

    out = tmp_path / "export"
    result = runner.invoke(labeler_main, ["export", "--project", "fruit", "--out", str(out), "--test-fraction", "0", "--db", db_url])
    assert result.exit_code == 0, result.output
    prefs = datasets.load_from_disk(str(out / "preferences"))["train"]
    pairs = {(last_user_text(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in prefs}
    # Majority across the two annotators, ties dropped:
    #   fruit: apple-banana split 1:1 -> dropped; apple > rock and banana > rock by both.
    #   hi:    hi > greetings (alice) vs tie (bob) -> no majority, dropped; both rank "" last.
    assert pairs == {
        ("Name a fruit.", "apple", "rock"), ("Name a fruit.", "banana", "rock"),
        ("Say hi.", "hi", ""), ("Say hi.", "Greetings, dear user, how do you do?", ""),
    }  # fmt: skip
    by_pair = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r for r in prefs}
    assert by_pair[("apple", "rock")]["annotators"] == ["alice", "bob"] and by_pair[("apple", "rock")]["agreement"] == 1.0
    system = next(r for r in prefs if last_user_text(r["prompt"]) == "Say hi.")["prompt"][0]
    assert system == {"role": "system", "content": "Be brief."}  # the conversation travels whole
