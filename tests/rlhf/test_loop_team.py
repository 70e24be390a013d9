"""The loop on a team's own data, through the real `rlhf` command: a plain prompt file, a model folder,
people as annotators (the loop pushes and exits; --status reports), and a bad line that stops the run
before anything is written."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def plain_prompts(path: Path, n: int = 40) -> Path:
    topics = ["tea", "rivers", "chess", "bread", "owls", "rain", "jazz", "maps", "glass", "bees"]
    path.write_text("".join(json.dumps({"prompt": f"Write two sentences about {topics[i % 10]} (note {i})."}) + "\n"
                            for i in range(n)))
    return path


def test_plain_prompts_with_people_push_tasks_exit_and_report_status(tiny_model, tmp_path):
    prompts, out = plain_prompts(tmp_path / "my_prompts.jsonl"), tmp_path / "run"
    args = ["loop", "--prompts_file", str(prompts), "--model_name_or_path", tiny_model, "--annotators", "human",
            "--output_dir", str(out), "--name", "team"]
    done = rlhf(*args)
    assert done.returncode == 0, done.stderr
    assert "http://127.0.0.1:5000/projects/team-round-1/annotate" in done.stdout
    assert f"labeler serve --db sqlite:///{(out / 'labels.db').resolve()}" in done.stdout
    described = json.loads((out / "prompts.json").read_text())
    train, heldout = described["train"], described["heldout"]
    assert train + heldout == 40 and heldout >= 1 and described["split_by_hash"] == 40
    with sqlite3.connect(out / "labels.db") as con:
        tasks = con.execute("SELECT COUNT(*) FROM task t JOIN project p ON p.id = t.project_id "
                            "WHERE p.name = 'team-round-1'").fetchone()[0]
        annotations = con.execute("SELECT COUNT(*) FROM annotation").fetchone()[0]
    assert tasks == train and annotations == 0
    assert not (out / "round-1" / "sft").exists()  # nothing trains before the labels are in

    status = rlhf(*args, "--status")
    assert status.returncode == 0, status.stderr
    assert f"0 of {tasks} tasks labelled" in status.stdout
    assert "stages done: generate" in status.stdout

    # The same command again, still without labels: it pushes nothing new and waits again.
    again = rlhf(*args)
    assert again.returncode == 0 and "0 new task(s)" in again.stdout


def test_a_bad_line_stops_the_run_before_anything_is_written(tiny_model, tmp_path):
    prompts = plain_prompts(tmp_path / "my_prompts.jsonl")
    lines = prompts.read_text().splitlines()
    lines[6] = '{"prompt": "an unfinished line'
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    done = rlhf("loop", "--prompts_file", str(prompts), "--model_name_or_path", tiny_model, "--annotators", "human",
                "--output_dir", str(out))
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and f"{prompts}:7: invalid JSON" in error[0]
    assert not out.exists()


def test_simulated_annotators_need_constraints(tiny_model, tmp_path):
    prompts = plain_prompts(tmp_path / "my_prompts.jsonl")
    out = tmp_path / "run"
    done = rlhf("loop", "--prompts_file", str(prompts), "--model_name_or_path", tiny_model, "--output_dir", str(out))
    assert done.returncode != 0 and "--annotators human" in done.stderr and not out.exists()
