"""A whole round of the loop with people: the loop pushes its tasks and exits, two annotators label them
in Debian's chromium with the keyboard only (a tie, an edited response, an "all bad"), the same command
continues through sft, reward, dpo and export, and a second round samples from the round-1 export.
Then one annotator votes in the blind arena and --status shows it.

Everything is real: the `rlhf` and `labeler` commands as subprocesses, `labeler serve` over HTTP, the
SQLite file, the tiny random model with the real tokenizer.
"""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, f"{args[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def loop_args(prompts: Path, model: str, out: Path) -> list[str]:
    return ["rlhf.cli", "loop", "--prompts_file", str(prompts), "--model_name_or_path", model,
            "--annotators", "human", "--output_dir", str(out), "--name", "team", "--k", "2", "--rounds", "2",
            # the smoke recipes keep each stage to seconds on the tiny model
            *[a for s in ("generate", "sft", "reward", "dpo", "eval", "export")
              for a in (f"--{s}_config", f"smoke/{s}")]]


def task_id(page) -> int:
    return int(page.get_attribute("#annotate-form", "data-task-id"))


def press(page, *keys: str) -> None:
    page.locator("body").focus()
    for key in keys:
        page.keyboard.press(key)


def submit_and_wait(page, previous: int) -> None:
    """Enter submits; the page then loads the next task (or the done page)."""
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator(f"#annotate-form[data-task-id='{previous}']").count() == 0


def test_two_annotators_label_a_round_in_the_browser_and_the_loop_continues(
        tiny_model, tmp_path, browser, serve_labeler, login):
    prompts = tmp_path / "team_prompts.jsonl"
    rows = [{"prompt": f"Say something kind about {t}.", "split": "train"}
            for t in ("tea", "rivers", "chess", "bread", "owls", "rain")]
    rows += [{"prompt": f"Describe {t} in one line.", "split": "heldout"} for t in ("jazz", "maps")]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    db_url = f"sqlite:///{(out / 'labels.db').resolve()}"

    # 1. The loop pushes round 1's tasks and exits, saying where people label.
    first = run(*loop_args(prompts, tiny_model, out))
    assert "/projects/team-round-1/annotate" in first.stdout and f"labeler serve --db {db_url}" in first.stdout
    for name in ("ann1", "ann2"):
        run("labeler.cli", "users", "add", name, "--password", PASSWORD, "--db", db_url)
    server = serve_labeler(db_url)

    # 2. Two annotators in two browser sessions, keyboard only; they take turns so each holds one lease.
    pages = {}
    for name in ("ann1", "ann2"):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pages[name] = context.new_page()
        pages[name].set_default_timeout(15_000)
        login(pages[name], server, name)
        pages[name].goto(f"{server}/projects/team-round-1/annotate")
    plan = {"ann1": [("1",), ("t",), ("edit", "2")], "ann2": [("b",), ("2",), ("1",)]}
    labelled = {"ann1": [], "ann2": []}
    for turn in range(3):
        for name in ("ann1", "ann2"):
            page = pages[name]
            current = task_id(page)
            keys = plan[name][turn]
            if keys[0] == "edit":
                press(page, "e")  # opens the edit box and focuses it
                page.keyboard.type("A kind answer, written by hand.")
                page.keyboard.press("Escape")
                keys = keys[1:]
            press(page, *keys)
            submit_and_wait(page, current)
            labelled[name].append(current)
    for page in pages.values():
        page.wait_for_selector("text=Nothing left to label")

    with sqlite3.connect(out / "labels.db") as con:
        stored = {tid: (json.loads(r), bool(bad), edit) for tid, r, bad, edit in con.execute(
            "SELECT task_id, ranking, all_bad, edited_response FROM annotation")}
    assert len(stored) == 6
    tie_task, edit_task, bad_task = labelled["ann1"][1], labelled["ann1"][2], labelled["ann2"][0]
    assert len(set(stored[tie_task][0].values())) == 1  # both responses share rank 1
    assert stored[edit_task][2] == "A kind answer, written by hand."
    assert stored[bad_task][1] is True
    for tid in labelled["ann1"][:1] + labelled["ann2"][1:]:
        assert sorted(stored[tid][0].values()) == [1, 2]

    status = run(*loop_args(prompts, tiny_model, out), "--status").stdout
    assert "6 of 6 tasks labelled" in status
    assert "ann1" in status and "ann2" in status

    # 3. The same command continues: sft, reward, dpo, eval, the arena push and export, then round 2 waits.
    second = run(*loop_args(prompts, tiny_model, out))
    round1 = out / "round-1"
    for stage in ("sft", "reward", "dpo", "eval", "export"):
        assert (round1 / stage / "summary.json").is_file(), stage
    labels = json.loads((round1 / "labels" / "export.json").read_text())
    assert labels["counts"]["pairs_by_source"]["edited"] >= 1  # the hand edit beats both candidates
    assert labels["content_hash"] in (round1 / "export" / "README.md").read_text()
    gen2 = yaml.safe_load((out / "round-2" / "generate" / "config.yaml").read_text())
    assert gen2["model_name_or_path"] == str(round1 / "export")
    assert "/projects/team-round-2/annotate" in second.stdout
    assert "/projects/team-arena-round-1/annotate" in second.stdout

    # 4. The blind arena: ann1 votes on both held-out prompts (final vs base); the model names stay hidden.
    page = pages["ann1"]
    page.goto(f"{server}/projects/team-arena-round-1/annotate")
    assert "final" not in page.inner_text(".responses") and "base" not in page.inner_text(".responses")
    for _ in range(2):
        current = task_id(page)
        press(page, "1")
        submit_and_wait(page, current)
    status = run(*loop_args(prompts, tiny_model, out), "--status").stdout
    assert "team-arena-round-1: 2 of 2 tasks voted" in status
    assert "final_vs_base" in status and "(2 votes)" in status
