"""scripts/bench_sft.py, bench_reward.py and bench_eval.py end to end on the tiny random model: each runs our
command and the plain counterpart, each in its own process, and ends with one JSON line of figures.

The end-to-end runs are `slow` (`make test-slow`): each starts three Python processes that import torch and TRL,
30-70 s on 2 cores. Their --help runs in `make test`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ["bench_sft.py", "bench_reward.py", "bench_eval.py"]


def run_bench(script: str, *args: str) -> tuple[list[str], dict]:
    """The script's stdout lines and its last line parsed as JSON."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


def check_ratios(figures: dict, theirs: str) -> None:
    """Every figure positive, and the ratios the ones of the figures printed next to them."""
    for key in ("seconds", f"seconds_{theirs}", "peak_rss_gb", f"peak_rss_gb_{theirs}", "speedup", "memory_ratio"):
        assert figures[key] > 0, key
    # the ratios are computed before rounding: within the rounding of the figures they come from
    assert figures["speedup"] == pytest.approx(figures[f"seconds_{theirs}"] / figures["seconds"], rel=0.05)
    assert figures["memory_ratio"] == pytest.approx(figures["peak_rss_gb"] / figures[f"peak_rss_gb_{theirs}"], rel=0.01)


@pytest.mark.parametrize("script", BENCHES)
def test_help_says_what_is_compared(script):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--model" in proc.stdout and "speedup" in proc.stdout and "memory_ratio" in proc.stdout
    assert "--child" not in proc.stdout  # the children's own options stay hidden


@pytest.mark.slow
def test_bench_sft_on_the_tiny_model(tiny_model):
    lines, figures = run_bench("bench_sft.py", "--model", tiny_model, "--rows", "4", "--batch", "2")
    assert figures["rows"] == 4 and figures["steps"] == figures["steps_trl"] == 2  # same rows a step: same steps
    check_ratios(figures, "trl")
    assert figures["seconds_per_step"] > 0 and figures["seconds_per_step_trl"] > 0
    assert figures["speedup_per_step"] == pytest.approx(
        figures["seconds_per_step_trl"] / figures["seconds_per_step"], rel=0.05)
    assert any(line.startswith("plain TRL SFTTrainer") for line in lines)


@pytest.mark.slow
def test_bench_reward_on_the_tiny_model(tiny_model):
    # the recipe's two passes a step: ours takes 1 pair a pass, the plain script 2 at once; both 2 steps
    lines, figures = run_bench("bench_reward.py", "--model", tiny_model, "--pairs", "4", "--heldout", "2",
                               "--batch", "2")
    assert figures["pairs"] == 4 and figures["heldout"] == 2 and figures["steps"] == figures["steps_trl"] == 2
    check_ratios(figures, "trl")
    assert figures["speedup_per_step"] > 0
    table = [line for line in lines if line.startswith(("rlhf reward", "plain TRL RewardTrainer"))]
    assert len(table) == 2
    for line in table:  # held-out accuracy of 2 pairs: 0, 0.5 or 1
        assert float(line.split()[-1]) in (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_bench_eval_on_the_tiny_model(tiny_model):
    # In float32 both sides must give the same greedy answers and, for them, the same rewards.
    lines, figures = run_bench("bench_eval.py", "--model", tiny_model, "--prompts", "4", "--policies", "2",
                               "--batch-size", "2", "--new-tokens", "4", "--ours", "--dtype float32")
    assert (figures["prompts"], figures["policies"], figures["generation_dtype"]) == (4, 2, "float32")
    check_ratios(figures, "plain")
    assert figures["seconds_per_policy"] == pytest.approx(figures["seconds"] / 2, abs=0.1)
    assert figures["same_text"] == "4/4"
    assert figures["max_reward_diff_same_text"] < 1e-4


def test_measure_generate_options_help_and_bad_skip():
    script = str(ROOT / "scripts" / "measure_generate_options.py")
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "static" in proc.stdout and "torch.compile" in proc.stdout and "--sort-prompts" in proc.stdout
    proc = subprocess.run([sys.executable, script, "--skip", "static,warp"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--skip: unknown side(s) ['warp']" in proc.stderr


@pytest.mark.slow
def test_measure_generate_options_on_the_tiny_model(tiny_model):
    # compilation takes minutes even on the tiny model: left out here, run by hand (docs/performance.md)
    lines, figures = run_bench("measure_generate_options.py", "--model", tiny_model, "--prompts", "2", "--k", "2",
                               "--new-tokens", "4", "--batch-size", "2", "--sort-prompts", "5", "--repeats", "1",
                               "--skip", "compile")
    assert set(figures["seconds"]) == {"dynamic", "static"} and figures["first_call_seconds"] == {}
    assert figures["speedup"]["static"] == pytest.approx(figures["seconds"]["dynamic"] / figures["seconds"]["static"],
                                                         rel=0.05)
    same, total = figures["greedy_identical"]["static"].split("/")
    assert total == "2" and 0 <= int(same) <= 2
    sorting = figures["sorting"]
    assert sorting["prompts"] == 5
    # batches of 2 over 5 prompts: sorted by length never pads more than the input order
    assert sorting["prompt_tokens"] <= sorting["prompt_tokens_padded"]["sorted"] <= sorting["prompt_tokens_padded"]["in_order"]
    assert any(line.startswith("5 prompts in batches of 2") for line in lines)
