"""The closed loop on the tiny model: two rounds, simulated annotators through the real labeler API."""

import json
import os
import sqlite3
from pathlib import Path

import yaml

from rlhf.cli import main as rlhf_main

ROOT = Path(__file__).resolve().parents[2]


def test_two_rounds_chain_policies_and_trace_labels(tiny_model, smoke_loop_run, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs/smoke/loop.yaml, the former path, still names the shipped smoke recipe
    out = smoke_loop_run  # `rlhf loop --config configs/smoke/loop.yaml --rounds 2 --train_prompts 8 --heldout_prompts 3`

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["heldout_pass_rate"]) == {"base", "sft", "final"}
    assert all(0.0 <= v <= 1.0 for v in summary["heldout_pass_rate"].values())
    assert 0.0 <= summary["reward_accuracy"] <= 1.0 and summary["seconds"] > 0
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for name, (low, high) in summary["heldout_pass_rate_ci"].items():
        assert low <= summary["heldout_pass_rate"][name] <= high
    arena = summary["arena"]
    assert arena["project"] == "smoke-arena-round-2" and arena["votes"] == 12
    for key in ("final_vs_base", "final_vs_previous"):
        pair = arena[key]
        assert pair["wins"] + pair["losses"] + pair["ties"] + pair["both_bad"] == pair["votes"] == 6
        assert pair["win_rate_ci"][0] <= pair["win_rate"] <= pair["win_rate_ci"][1]
    assert set(arena["bradley_terry"]) == {"final", "base", "previous"}
    assert "previous" in summary["rounds"][1]["eval"]["policies"]  # round 2 also evaluates round 1's policy
    # The base answered the same held-out prompts in round 1: round 2's eval read those answers from the cache.
    assert [r["eval"]["cached_policies"] for r in summary["rounds"]] == [[], ["base"]]
    base_answers = [[(r["prompt"], r["response"]) for r in map(json.loads, (out / f"round-{n}" / "eval" / "responses.jsonl")
                     .read_text().splitlines()) if r["policy"] == "base"] for n in (1, 2)]
    assert base_answers[0] == base_answers[1] and len(base_answers[0]) == 3
    assert "cache (an earlier eval of the same weights, tokenizer, prompts and settings; judged afresh by this " \
           "round&#x27;s reward model): base." in (out / "report.html").read_text()
    # Where the time and memory went: every stage of the last round, measured by the loop itself.
    assert set(summary["stage_seconds"]) == {"generate", "sft", "reward", "dpo", "eval", "export"}
    assert all(s > 0 for s in summary["stage_seconds"].values())
    assert all(0.05 < gb < 64 for gb in summary["stage_peak_rss_gb"].values())
    assert summary["peak_rss_gb"] == max(max(r["peak_rss_gb"] for r in rnd["resources"].values())
                                         for rnd in summary["rounds"])
    sft_resources = json.loads((out / "round-2" / "sft" / "resources.json").read_text())
    assert sft_resources["seconds"] == summary["stage_seconds"]["sft"]
    # stage_processes (the default): every stage ran, and was measured, in a process of its own
    pids = {json.loads((out / "round-2" / s / "resources.json").read_text())["pid"] for s in summary["stage_seconds"]}
    assert len(pids) == 6 and os.getpid() not in pids

    # Lineage: round 2 samples from round 1's exported policy, and round 1 from the base model.
    gen1 = yaml.safe_load((out / "round-1" / "generate" / "config.yaml").read_text())
    gen2 = yaml.safe_load((out / "round-2" / "generate" / "config.yaml").read_text())
    assert gen1["model_name_or_path"] == tiny_model
    assert gen2["model_name_or_path"] == str(out / "round-1" / "export")
    assert summary["rounds"][1]["policy"] == str(out / "round-1" / "export")
    assert (out / "export" / "model.safetensors").is_file() and (out / "report.html").is_file()

    # Every round's labels are in the labeler's SQLite file, by simulated accounts, and the model card
    # names the labels (content hash) that trained the final policy.
    with sqlite3.connect(out / "labels.db") as con:
        per_project = dict(con.execute(
            "SELECT p.name, COUNT(a.id) FROM annotation a JOIN task t ON t.id = a.task_id "
            "JOIN project p ON p.id = t.project_id GROUP BY p.name"))
        simulated = {row[0] for row in con.execute("SELECT simulated FROM user u JOIN annotation a ON a.user_id = u.id")}
    # 8 tasks x overlap 2 per round; the arena: 3 held-out prompts x overlap 2, final vs base (round 1),
    # and final vs base + final vs previous (round 2)
    assert per_project == {"smoke-round-1": 16, "smoke-round-2": 16, "smoke-arena-round-1": 6, "smoke-arena-round-2": 12}
    assert simulated == {1}
    export2 = json.loads((out / "round-2" / "labels" / "export.json").read_text())
    assert summary["rounds"][1]["labels"]["content_hash"] == export2["content_hash"]
    card = (out / "export" / "README.md").read_text()
    assert export2["content_hash"] in card
    # simulated_edits: the babble over the word limit is cut by hand; the edits reach SFT and the pairs
    counts1 = summary["rounds"][0]["labels"]["counts"]
    assert counts1["sft_by_source"]["edited"] > 0 and counts1["pairs_by_source"]["edited"] > 0

    # A re-run finds every round complete and changes nothing.
    before = (out / "summary.json").read_text()
    assert rlhf_main(["loop", "--config", "configs/smoke/loop.yaml", "--model_name_or_path", tiny_model,
                      "--output_dir", str(out), "--rounds", "2", "--train_prompts", "8", "--heldout_prompts", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["rounds"] == json.loads(before)["rounds"]


def test_select_pairs_random_keeps_budget_and_two_candidates():
    from rlhf.selection import select_pairs

    tasks = [{"prompt": f"p{i}", "responses": [{"text": f"p{i} r{j}"} for j in range(4)], "meta": {"id": i}} for i in range(5)]
    picked = select_pairs(tasks, "random", budget=3, reward_model=None, seed=0)
    assert len(picked) == 3
    for task in picked:
        texts = [r["text"] for r in task["responses"]]
        assert len(texts) == 2 and texts[0] != texts[1]
        assert all(t.startswith(task["prompt"] + " ") for t in texts)  # both candidates belong to that prompt
        assert task["meta"]["selection"] == {"mode": "random"} and "id" in task["meta"]
    assert select_pairs(tasks, "random", budget=3, reward_model=None, seed=0) == picked  # seeded


def test_onpolicy_dpo_is_a_loop_algorithm(tiny_model, tmp_path, monkeypatch):
    """algorithm onpolicy_dpo: after SFT and the reward model, the policy trains on fresh samples that the
    reward model pairs (rlhf onpolicy) and that policy is the one evaluated and exported."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "loop"
    assert rlhf_main(["loop", "--config", "configs/smoke/loop.yaml", "--model_name_or_path", tiny_model,
                      "--output_dir", str(out), "--train_prompts", "6", "--heldout_prompts", "2",
                      "--algorithm", "onpolicy_dpo", "--arena", "false", "--stage_processes", "false"]) == 0
    round1 = out / "round-1"
    # --stage_processes false: the stages ran inside this (the loop's) process
    assert json.loads((round1 / "onpolicy" / "resources.json").read_text())["pid"] == os.getpid()
    assert (round1 / "onpolicy" / "summary.json").is_file() and not (round1 / "dpo").exists()
    evaluation = json.loads((round1 / "eval" / "summary.json").read_text())
    assert evaluation["policies"]["final"]["path"] == str(round1 / "onpolicy")
    summary = json.loads((out / "summary.json").read_text())
    assert "arena" not in summary
    assert "Reward-hacking guard" in (out / "report.html").read_text()  # each iteration on the held-out prompts
