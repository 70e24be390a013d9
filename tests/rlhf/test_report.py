"""report.html of a loop run, built from a fabricated run folder laid out as `rlhf loop` writes it."""

import base64
import json
from html.parser import HTMLParser

import pytest

from rlhf.errors import RlhfError
from rlhf.report import build_report

VOID = {"meta", "img", "br", "hr", "link", "input"}


class TableParser(HTMLParser):
    """Checks that every non-void tag closes in order, and collects tables as rows of cell texts and images."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tables, self.images = [], [], [], []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def parse(page: str) -> TableParser:
    parser = TableParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    return parser


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def write_metrics(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"time": 1.0, **r}) + "\n" for r in rows))


def eval_summary(final_pass: float) -> dict:
    figures = {
        "base": {"mean_reward": -0.25, "win_rate": 0.5, "kl_to_reference": 0.0, "mean_length": 30.0,
                 "pass_rate_prompt": 0.25, "pass_rate_instruction": 0.4, "kl_method": "separate_sample",
                 "pass_rate_by_type": {"lowercase": 0.5, "no_commas": 0.25}},
        "sft": {"mean_reward": 0.05, "win_rate": 0.625, "kl_to_reference": 0.0213, "mean_length": 22.0,
                "pass_rate_prompt": 0.375, "pass_rate_instruction": 0.55, "kl_method": "separate_sample",
                "pass_rate_by_type": {"lowercase": 0.75, "no_commas": 0.5}},
        "final": {"mean_reward": 0.1234, "win_rate": 0.75, "win_rate_lc": 0.625, "win_rate_lc_ci": [0.5, 0.75],
                  "kl_to_reference": 0.0456, "mean_length": 12.5,
                  "pass_rate_prompt": final_pass, "pass_rate_instruction": 0.6667, "kl_method": "separate_sample",
                  "pass_rate_by_type": {"lowercase": 1.0, "no_commas": 0.5}},
    }
    return {"reference": "base", "prompts": 8, "policies": figures, "kl_method": "separate_sample",
            "kl_sample": {"prompts": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32, "seed": 42},
            "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 42}}


def onpolicy_summary(constraints: bool = True) -> dict:
    """An onpolicy summary.json with the held-out guard: reward up, pass rate down, length up (reward hacking)."""
    def heldout(x, reward, passed, win, lc, length):
        figures = {"policy_after_iterations": x, "mean_reward": reward, "mean_reward_ci": [reward - 0.1, reward + 0.1],
                   "win_rate": win, "win_rate_ci": [win - 0.1, win + 0.1], "win_rate_lc": lc,
                   "win_rate_lc_ci": [lc - 0.1, lc + 0.1], "mean_length": length, "settings": {"prompts": 8}}
        if constraints:
            figures.update(pass_rate_prompt=passed, pass_rate_prompt_ci=[passed - 0.125, passed + 0.125])
        return figures

    records = [{"iteration": i, "policy_after_iterations": i - 1, "mean_reward": 0.1 * i, "mean_length": 20.0 + 5 * i,
                "kl_to_reference": 0.0 if i == 1 else 0.5 * i, "kept_pairs": 4, "trained": True,
                "heldout": heldout(i, 0.2 * i, 0.5 - 0.125 * i, 0.5 + 0.1 * i, 0.5, 25.0 + 10 * i)} for i in (1, 2)]
    return {"per_iteration": records, "final": {"policy_after_iterations": 2, "mean_reward": 0.35, "mean_length": 31.0,
                                                "kl_to_reference": 1.5},
            "heldout_sft": heldout(0, 0.0, 0.5, 0.5, 0.5, 25.0)}


@pytest.fixture
def run_dir(tmp_path):
    """Two rounds; round 1 without rl, round 2 with rl; labels exported only in round 1."""
    run = tmp_path / "run"
    write(run / "summary.json", {
        "heldout_pass_rate": {"base": 0.25, "sft": 0.375, "final": 0.5}, "reward_accuracy": 0.8, "seconds": 1234.5,
        "reward_accuracy_by_source": {"edited": {"accuracy": 0.9, "pairs": 10}, "ranked": {"accuracy": 0.7, "pairs": 10}},
        "rounds": [{"round": r, "policy": f"policy-{r}", "labels": {"id": r, "content_hash": f"hash-{r}",
                                                                    "counts": {"tasks": 24}},
                    "stages": {"sft": "x"}, "reward_accuracy": 0.8, "eval": eval_summary(0.5)} for r in (1, 2)],
    })
    for r in (1, 2):
        rd = run / f"round-{r}"
        write(rd / "generate" / "summary.json", {"prompts": 8, "responses": 32, "seconds": 61.0})
        write_metrics(rd / "sft" / "metrics.jsonl", [{"step": s, "loss": 2.0 - 0.1 * s} for s in range(1, 6)]
                      + [{"step": 5, "train_runtime": 9.0, "train_loss": 1.7}])
        write(rd / "sft" / "summary.json", {"steps": 5, "train_runtime_s": 9.0})
        write(rd / "sft" / "run.json", {"stage": "sft", "labels": [{"id": r, "content_hash": f"hash-{r}", "rows": 5}]})
        write(rd / "sft" / "resources.json", {"stage": "sft", "seconds": 12.5, "peak_rss_gb": 2.25})  # the loop's
        write_metrics(rd / "reward" / "metrics.jsonl", [{"step": s, "loss": 0.69 - 0.05 * s, "accuracy": 0.5 + 0.1 * s,
                                                          "margin": 0.1 * s} for s in range(1, 4)]
                      + [{"step": 3, "train_runtime": 4.5, "train_loss": 0.6}])
        write(rd / "reward" / "summary.json", {"heldout_accuracy": 0.7 + 0.05 * r})
        write_metrics(rd / "dpo" / "metrics.jsonl", [{"step": s, "loss": 0.69 - 0.01 * s, "rewards/accuracies": 0.5,
                                                       "rewards/margins": 0.02 * s} for s in range(1, 4)])
        write(rd / "eval" / "summary.json", eval_summary(0.375 if r == 1 else 0.5))
        records = [{"policy": p, "prompt": f"Prompt {i}", "response": f"{p} answer {i} <script>alert(1)</script>",
                    "reward": 0.1 * i, "tokens": 5 + i + len(p), "constraints_met": [True, i % 2 == 0]}
                   for p in ("base", "sft", "final") for i in range(4)]
        (rd / "eval" / "responses.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    write_metrics(run / "round-2" / "rl" / "metrics.jsonl", [{"step": s, "loss": 0.001, "reward": 0.1 * s, "kl": 0.01 * s}
                                                             for s in range(1, 3)])
    write(run / "round-2" / "rl" / "summary.json", {"steps": 2, "train_runtime_s": 33.3})
    write(run / "round-2" / "onpolicy" / "summary.json", onpolicy_summary())
    write(run / "round-1" / "labels" / "export.json", {
        "id": 3, "project": "quickstart-r1", "content_hash": "f00dfeed" * 8, "format": "trl-conversational",
        "counts": {"tasks": 24, "annotations": 48, "pairs": {"train": 60, "test": 7}},
        "filters": {"aggregation": "majority"},
    })
    (run / "round-1" / "labels" / "preferences.jsonl").write_text("".join(
        json.dumps({"annotators": ["sim-1", "sim-2"], "simulated": True}) + "\n" for _ in range(3)))
    return run


def test_report_has_the_table_values_and_embedded_plots(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    parsed = parse(page)
    rows = [row for table in parsed.tables for row in table]

    # headline: held-out pass rates, reward accuracy, seconds, and round 2's per-policy figures
    assert ["pass rate", "25.0%", "37.5%", "50.0%"] in rows
    assert "+25.0 points" in page
    assert ["reward model held-out pair accuracy", "80.0%"] in rows and ["seconds", "1234.500"] in rows
    assert ["on edited pairs (10)", "90.0%"] in rows and ["on ranked pairs (10)", "70.0%"] in rows
    header = next(t[0] for t in parsed.tables if t[0][0] == "policy" and "pass rate (prompt)" in t[0])
    assert header == ["policy", "pass rate (prompt)", "pass rate (instruction)", "mean reward", "win rate vs base",
                      "length-controlled win rate vs base", "KL to base", "mean length (tokens)"]
    assert ["final", "50.0%", "66.7%", "+0.123", "75.0%", "62.5% [50.0%, 75.0%]", "0.046", "12.500"] in rows
    assert ["base", "25.0%", "40.0%", "-0.250", "50.0%", "–", "0.000", "30.000"] in rows  # older summaries: a dash
    assert ["lowercase", "50.0%", "75.0%", "100.0%"] in rows  # per type, per policy
    assert "separate temperature-1 sample" in page

    # the loop's round records, flattened; stages per round: rl only in round 2, losses from metrics.jsonl,
    # runtime from the summary or else TRL's last log line, and the labels each stage trained on
    round_table = next(t for t in parsed.tables if t[0][0] == "round")
    assert round_table[0] == ["round", "policy", "labels.id", "labels.content_hash", "reward_accuracy"]
    assert round_table[2] == ["2", "policy-2", "2", "hash-2", "0.800"]
    # with the loop's measurement of the whole stage (resources.json) where there is one
    assert ["sft", "5", "1.900", "1.500", "9.000", "12.500", "2.250", "hash-2"] in rows
    assert ["rl", "2", "0.001", "0.001", "33.300", "–", "–", "–"] in rows
    assert ["reward", "3", "0.640", "0.540", "4.500", "–", "–", "–"] in rows
    assert sum(1 for row in rows if row[0] == "rl") == 1

    # provenance of the labels
    assert ["content_hash", "f00dfeed" * 8] in rows and ["counts: tasks", "24"] in rows
    assert ["counts: pairs", '{"test": 7, "train": 60}'] in rows
    assert ["pairs from simulated annotators", "3 of 3"] in rows and ["annotators", "sim-1, sim-2"] in rows

    # examples are escaped text, never markup
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    # the reward-hacking guard of round 2's onpolicy stage: one chart and its table, per iteration (0 = SFT)
    guard = next(t for t in parsed.tables if t[0][0] == "DPO iterations")
    assert guard[0][1:5] == ["reward (training samples)", "reward (held-out)", "pass rate (held-out)",
                             "win rate vs SFT (held-out)"]
    assert guard[1][:5] == ["0", "+0.100", "+0.000 [-0.100, +0.100]", "50.0% [37.5%, 62.5%]", "50.0% [40.0%, 60.0%]"]
    assert guard[3][:4] == ["2", "+0.350", "+0.400 [+0.300, +0.500]", "25.0% [12.5%, 37.5%]"]  # reward up, pass down
    assert guard[3][5:] == ["50.0% [40.0%, 60.0%]", "31.000", "45.000", "1.500"]  # LC win rate flat, longer answers
    assert [img["alt"] for img in parsed.images].count(
        "reward model score, held-out pass rate and response length per on-policy iteration") == 1
    assert "while the held-out pass rate falls" in page and "quality reference is the arena" not in page

    # plots: pass rate per policy, per type, per round, losses, reward curves, lengths, the guard; real PNGs inline
    assert len(parsed.images) == 7
    for img in parsed.images:
        assert img["src"].startswith("data:image/png;base64,") and img["alt"]
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob("*.png")) and not list(run_dir.glob("*.tmp"))  # one self-contained file


def test_guard_without_constraints_points_to_the_arena(tmp_path):
    run = tmp_path / "run"
    write(run / "round-1" / "onpolicy" / "summary.json", onpolicy_summary(constraints=False))
    parsed = parse(build_report(run).read_text())
    guard = next(t for t in parsed.tables if t[0][0] == "DPO iterations")
    assert [row[3] for row in guard[1:]] == ["–", "–", "–"]  # no pass rate without constraints
    assert [row[1] for row in guard[1:]] == ["+0.100", "+0.200", "+0.350"]
    assert "quality reference is the arena" in build_report(run).read_text()
    assert len(parsed.images) == 1  # the guard chart: reward, win rates, length

    # the guard off: the training samples' figures only, and the report says it was off
    summary = onpolicy_summary()
    del summary["heldout_sft"]
    for record in summary["per_iteration"]:
        del record["heldout"]
    write(run / "round-1" / "onpolicy" / "summary.json", summary)
    page = build_report(run).read_text()
    guard = next(t for t in parse(page).tables if t[0][0] == "DPO iterations")
    assert [row[2] for row in guard[1:]] == ["–", "–", "–"] and "held-out guard was off" in page


def test_guard_panels_hold_every_figure():
    from rlhf.onpolicy import guard_panels

    panels = guard_panels(onpolicy_summary())
    assert list(panels) == ["reward model score", "held-out pass rate (all constraints met)",
                            "held-out win rate vs the SFT model", "mean length (tokens)"]
    xs, ys, lows, highs = panels["held-out pass rate (all constraints met)"]["held-out (greedy)"]
    assert (xs, ys, lows, highs) == ([0, 1, 2], [0.5, 0.375, 0.25], [0.375, 0.25, 0.125], [0.625, 0.5, 0.375])
    assert panels["reward model score"]["training samples"] == ([0, 1, 2], [0.1, 0.2, 0.35])
    assert panels["mean length (tokens)"]["held-out (greedy)"] == ([0, 1, 2], [25.0, 35.0, 45.0])
    assert panels["held-out win rate vs the SFT model"]["length-controlled"][1] == [0.5, 0.5, 0.5]
    assert "held-out pass rate (all constraints met)" not in guard_panels(onpolicy_summary(constraints=False))


def test_report_skips_missing_parts(tmp_path):
    run = tmp_path / "run"
    write(run / "summary.json", {"heldout_pass_rate": {"base": 0.1, "final": 0.3}, "seconds": 10})
    write_metrics(run / "round-1" / "sft" / "metrics.jsonl", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.8}])
    page = build_report(run).read_text()
    parsed = parse(page)
    rows = [row for table in parsed.tables for row in table]
    assert ["pass rate", "10.0%", "30.0%"] in rows and ["reward model held-out pair accuracy", "–"] in rows
    assert "No eval summary found" in page and "No labels (labels/export.json)" in page
    assert len(parsed.images) == 1  # the loss curve only: no reward curves, pass rates or lengths


def test_report_without_a_run_is_an_error(tmp_path):
    with pytest.raises(RlhfError, match="run folder not found"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RlhfError, match="loop run folder"):
        build_report(tmp_path / "empty")
    write(tmp_path / "bad" / "round-1" / "eval" / "summary.json", {})
    (tmp_path / "bad" / "round-1" / "eval" / "summary.json").write_text("{not json")
    with pytest.raises(RlhfError, match=r"round-1/eval/summary.json:1"):
        build_report(tmp_path / "bad")
    assert not (tmp_path / "bad" / "report.html").exists()


def test_report_shows_intervals_and_the_arena(tmp_path):
    run = tmp_path / "run"
    write(run / "summary.json", {
        "heldout_pass_rate": {"base": 0.185, "sft": None, "final": 0.348},
        "heldout_pass_rate_ci": {"base": [0.109, 0.272], "sft": None, "final": [0.25, 0.446]},
        "reward_accuracy": 0.777, "reward_accuracy_ci": [0.705, 0.842],
        "reward_accuracy_by_source": {"ranked": {"accuracy": 0.571, "pairs": 63, "ci": [0.444, 0.698]}},
        "arena": {"project": "q-arena-round-1", "votes": 92, "method": "bootstrap",
                  "final_vs_base": {"policy": "final", "opponent": "base", "wins": 40, "losses": 20, "ties": 30,
                                    "both_bad": 2, "votes": 92, "prompts": 92, "win_rate": 0.609,
                                    "win_rate_ci": [0.533, 0.679]},
                  "bradley_terry": {"final": {"score": 0.22, "ci": [0.1, 0.35], "votes": 92},
                                    "base": {"score": -0.22, "ci": [-0.35, -0.1], "votes": 92}}},
        "seconds": 10})
    parsed = parse(build_report(run).read_text())
    rows = [row for table in parsed.tables for row in table]
    assert ["pass rate", "18.5% [10.9%, 27.2%]", "34.8% [25.0%, 44.6%]"] in rows  # sft has no figure: left out
    assert ["reward model held-out pair accuracy", "77.7% [70.5%, 84.2%]"] in rows
    assert ["on ranked pairs (63)", "57.1% [44.4%, 69.8%]"] in rows
    assert ["final", "base", "40", "20", "30", "2", "92", "60.9% [53.3%, 67.9%]"] in rows
    assert ["final", "+0.220 [+0.100, +0.350]", "92"] in rows and rows.index(["final", "+0.220 [+0.100, +0.350]", "92"]) \
        < rows.index(["base", "-0.220 [-0.350, -0.100]", "92"])  # best first
