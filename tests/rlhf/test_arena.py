"""`rlhf arena`, the standalone blind arena: sample two policies on held-out prompts, push A/B tasks,
let simulated voters vote through the real labeler API, read the results back."""

import json
import sqlite3
from pathlib import Path

from rlhf.cli import main as rlhf_main

ROOT = Path(__file__).resolve().parents[2]


def test_identical_policies_tie_on_every_prompt_and_results_read_back(tiny_model, tmp_path, capsys):
    prompts = tmp_path / "heldout.jsonl"
    rows = [json.loads(line) for line in (ROOT / "rlhf" / "recipes" / "data" / "smoke" / "loop_prompts.jsonl").read_text().splitlines()][:4]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    out = tmp_path / "arena"
    # the same model twice: the same greedy answers, so every vote must be a tie
    assert rlhf_main(["arena", "--policies", tiny_model, tiny_model, "--policy_names", "new", "old",
                      "--prompts_file", str(prompts), "--database", db, "--project", "cmp", "--output_dir", str(out),
                      "--max_new_tokens", "12", "--annotators", "simulated"]) == 0
    results = json.loads((out / "arena.json").read_text())
    pair = results["pairs"]["new_vs_old"]
    assert pair["votes"] == 4 and pair["ties"] == 4 and pair["win_rate"] == 0.5
    assert pair["win_rate_ci"] == [0.5, 0.5]
    with sqlite3.connect(tmp_path / "labels.db") as con:
        kind, k = con.execute("SELECT kind, k FROM project WHERE name = 'cmp'").fetchone()
        models = {m for (m,) in con.execute("SELECT DISTINCT model FROM response")}
    assert (kind, k) == ("arena", 2) and models == {"new", "old"}
    answers = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(answers) == 8 and all(a["response"] == b["response"] for a, b in zip(answers[:4], answers[4:]))

    capsys.readouterr()
    assert rlhf_main(["arena", "--database", db, "--project", "cmp", "--output_dir", str(out), "--results"]) == 0
    printed = capsys.readouterr().out
    assert "new_vs_old" in printed and "win rate 0.500 [0.500, 0.500]" in printed and "4 ties" in printed


def test_people_get_the_url_and_no_votes_yet(tiny_model, tmp_path, capsys):
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name a colour ({i})."}) + "\n" for i in range(3)))
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    assert rlhf_main(["arena", "--policies", tiny_model, tiny_model, "--prompts_file", str(prompts), "--database", db,
                      "--project", "cmp", "--policy_names", "a", "b", "--output_dir", str(tmp_path / "arena"), "--max_new_tokens", "8"]) == 0
    assert "/projects/cmp/annotate" in capsys.readouterr().out
    assert json.loads((tmp_path / "arena" / "arena.json").read_text())["votes"] == 0
    # the same folder twice without names: the votes could not tell them apart
    assert rlhf_main(["arena", "--policies", tiny_model, tiny_model, "--prompts_file", str(prompts), "--database", db,
                      "--project", "cmp2"]) == 2
    assert "policy names must be unique" in capsys.readouterr().err
