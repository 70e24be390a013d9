"""scripts/compare_selection.py: least-certain selection by hand, then active vs random end to end on a tiny model."""

import importlib.util
import json
from pathlib import Path

import pytest

from rlhf.selection import least_certain

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_selection", ROOT / "scripts" / "compare_selection.py")
compare_selection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_selection)

CONSTRAINTS = [{"type": "lowercase", "params": {}}, {"type": "no_commas", "params": {}}]
TOPICS = ["tea", "rain", "maps", "bees", "snow", "jazz"]


def make_task(topic: str) -> dict:
    # constraints met: 2, 1, 1, 0 -> the two middle ones tie, so 5 of the 6 pairs are ordered
    texts = [f"{topic} is calm and good", f"{topic.title()} Is Calm And Good", f"{topic} is calm, and good",
             f"{topic.title()}, Calm, Good"]
    return {"prompt": f"Tell me about {topic}. Write in lowercase. Do not use commas.",
            "responses": [{"text": t} for t in texts], "meta": {"constraints": CONSTRAINTS}}


def write_tasks(path: Path, topics: list[str]) -> Path:
    path.write_text("".join(json.dumps(make_task(t)) + "\n" for t in topics))
    return path


def test_least_certain_hand_computed():
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]
    scores = {"a": 1.0, "b": 0.2, "c": 0.9, "d": 0.9}
    # gaps 0.8, 0.1, 0.7, 0.0
    assert least_certain(pairs, scores, 2) == [("c", "d"), ("a", "c")]
    assert least_certain(pairs, scores, 10) == [("c", "d"), ("a", "c"), ("b", "c"), ("a", "b")]
    assert least_certain(pairs, scores, 0) == []
    # equal gaps keep the pool's order
    assert least_certain([("x", "y"), ("y", "x"), ("x", "x")], {"x": 1.0, "y": 3.0}, 2) == \
        [("x", "x"), ("x", "y")]


def test_simulated_judgments_hand_computed():
    task = make_task("tea")
    texts = [r["text"] for r in task["responses"]]
    rows = compare_selection.heldout_preferences([task])
    assert [(texts.index(r["chosen"]), texts.index(r["rejected"])) for r in rows] == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    assert compare_selection.judge_pair(task, 1, 2, 0.0, seed=0) is None  # 1 of 2 met each: a tie
    right = compare_selection.judge_pair(task, 0, 3, 0.0, seed=0)
    assert (right["chosen"], right["rejected"]) == (texts[0], texts[3])
    flipped = compare_selection.judge_pair(task, 0, 3, 1.0, seed=0)  # error rate 1: always the other way
    assert (flipped["chosen"], flipped["rejected"]) == (texts[3], texts[0])
    assert len(compare_selection.candidate_pairs([task, task])) == 12


def test_tasks_without_constraints_fail_naming_the_line(tiny_model, tmp_path, capsys):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text(json.dumps(make_task("tea")) + "\n" + json.dumps({"prompt": "hi", "responses": [{"text": "a"}, {"text": "b"}]}) + "\n")
    code = compare_selection.main(["--model", tiny_model, "--tasks", str(bad), "--heldout-tasks", str(bad),
                                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:2" in err and "meta.constraints" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


def test_active_and_random_curves_end_to_end(tiny_model, tmp_path):
    train = write_tasks(tmp_path / "train.jsonl", TOPICS[:4])  # 24 candidate pairs
    heldout = write_tasks(tmp_path / "heldout.jsonl", TOPICS[4:])  # 10 ordered held-out pairs
    out = tmp_path / "cmp"
    code = compare_selection.main(["--model", tiny_model, "--tasks", str(train), "--heldout-tasks", str(heldout),
                                   "--seed-pairs", "6", "--batch", "6", "--rounds", "2", "--max-steps", "2",
                                   "--out", str(out)])
    assert code == 0
    report = json.loads((out / "selection.json").read_text())
    assert report["pool_pairs"] == 24 and report["heldout_pairs"] == 10
    curves = report["curves"]
    assert set(curves) == {"random", "uncertain"}
    for curve in curves.values():
        assert curve["labels"] == [6, 12]
        assert all(0 <= p <= n for p, n in zip(curve["pairs"], curve["labels"]))
        for acc in curve["heldout_accuracy"]:
            assert 0.0 <= acc <= 1.0 and acc * 10 == pytest.approx(round(acc * 10))  # a fraction of 10 pairs
    # Round 1 is the shared seed set: one reward model, one figure for both strategies.
    assert curves["random"]["heldout_accuracy"][0] == curves["uncertain"]["heldout_accuracy"][0]
    assert report["rounds"]["random"][0]["reward_dir"] == report["rounds"]["uncertain"][0]["reward_dir"]
    # Every round trained a real reward model on the pairs written for it.
    for records in report["rounds"].values():
        for r in records:
            summary = json.loads((Path(r["reward_dir"]) / "summary.json").read_text())
            assert summary["heldout_rows"] == 10 and summary["train_rows"] == r["pairs"]
    # The uncertain picks carry their reward gaps, smallest first; random picks have none.
    picked = [json.loads(line) for line in (out / "uncertain" / "round-1" / "selected.jsonl").read_text().splitlines()]
    assert len(picked) == 6
    gaps = [p["reward_gap"] for p in picked]
    assert all(isinstance(g, float) for g in gaps) and gaps == sorted(gaps)
    randoms = [json.loads(line) for line in (out / "random" / "round-1" / "selected.jsonl").read_text().splitlines()]
    assert len(randoms) == 6 and all(p["reward_gap"] is None for p in randoms)
    # No pair is labelled twice: the shared seed set and each strategy's picks are disjoint.
    seed = [json.loads(line) for line in (out / "seed" / "selected.jsonl").read_text().splitlines()]
    key = lambda p: (p["task"], p["i"], p["j"])  # noqa: E731
    assert len({key(p) for p in seed} | {key(p) for p in picked}) == 12
    assert len({key(p) for p in seed} | {key(p) for p in randoms}) == 12
    assert sum(p["judgment"] is not None for p in seed) == curves["random"]["pairs"][0]
    assert (out / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heldout_prompts_that_are_train_prompts_are_refused(tiny_model, tmp_path, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl", TOPICS[:2])
    code = compare_selection.main(["--model", tiny_model, "--tasks", str(tasks), "--heldout-tasks", str(tasks),
                                   "--out", str(tmp_path / "out")])
    assert code == 2 and "also train prompts" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
