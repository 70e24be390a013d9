"""report.html of a loop run: one self-contained file (plots embedded as PNG data URIs, no JS) to read or mail.

    from rlhf.report import build_report
    build_report("runs/quickstart")      # -> runs/quickstart/report.html

What it reads; only the run folder itself is required, a missing part (no rl stage, no labels) is skipped:

    <run>/summary.json                       heldout_pass_rate {base, sft, final}, reward_accuracy, seconds, rounds
    <run>/round-<r>/<stage>/metrics.jsonl    TRL log dicts: step, loss, accuracy, rewards/margins, reward, kl ...
    <run>/round-<r>/<stage>/summary.json     the stage's own figures (steps, runtime)
    <run>/round-<r>/eval/summary.json        per-policy figures written by `rlhf eval` (rlhf.eval.run_eval)
    <run>/round-<r>/eval/responses.jsonl     one record per policy and prompt (lengths, example answers)
    <run>/round-<r>/onpolicy/summary.json    per_iteration figures and the held-out guard (`heldout`, `heldout_sft`)
    <run>/round-<r>/labels/export.json       the labels that trained the round (id, content hash, counts)

The headline table shows the last round that has an eval; curves overlay every round.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError

TRAINING_STAGES = ("sft", "reward", "dpo", "rl")
# Panels of the reward/accuracy figure: (title, stage, metric keys to try in order; TRL names differ by trainer).
REWARD_PANELS = [
    ("reward model: pair accuracy", "reward", ("accuracy", "rewards/accuracies", "eval_accuracy")),
    ("reward model: margin", "reward", ("margin", "rewards/margins")),
    ("dpo: rewards/accuracies", "dpo", ("rewards/accuracies",)),
    ("dpo: rewards/margins", "dpo", ("rewards/margins",)),
    ("rl: reward", "rl", ("reward",)),
    ("rl: kl", "rl", ("kl",)),
]
EXAMPLES = 3  # prompts shown with every policy's answer
_ROUND = re.compile(r"^round-(\d+)$")

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.text { text-align: left; }
td.text { max-width: 420px; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .85em; }
img { max-width: 100%; margin: .5em 0; } .note { color: #666; font-size: .9em; } code { font-size: .9em; }
"""


def find_rounds(run_dir: Path) -> list[tuple[int, Path]]:
    rounds = [(int(m.group(1)), d) for d in run_dir.iterdir() if d.is_dir() and (m := _ROUND.match(d.name))]
    return sorted(rounds)


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, or None when the file is absent; a corrupt file is an error naming it."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RlhfError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RlhfError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    return rows


# ---- formatting --------------------------------------------------------------------------------------


def fmt(value: Any, kind: str = "num") -> str:
    """A table cell: pass rates and accuracies as percentages, other numbers with 3 decimals, missing as a dash."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if kind == "pct":
            return f"{100 * value:.1f}%"
        if kind == "signed":
            return f"{value:+.3f}"
        return str(value) if isinstance(value, int) else f"{value:.3f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fmt_ci(value: Any, ci: Any, kind: str = "num") -> str:
    """A figure and its 95% interval in one cell: "34.8% [25.0%, 44.6%]"; the figure alone when there is none."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"{fmt(value, kind)} [{fmt(ci[0], kind)}, {fmt(ci[1], kind)}]"
    return fmt(value, kind)


def render_table(header: list[str], rows: list[list[str]], text_columns: tuple[int, ...] = ()) -> str:
    """Cells arrive as plain text and are escaped here; text_columns get the left-aligned monospace style."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="text">{html.escape(c)}</td>' if i in text_columns else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        ) + "</tr>\n"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">\n'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>\n'


# ---- sections ----------------------------------------------------------------------------------------


def render_headline(summary: dict[str, Any], eval_round: tuple[int, dict] | None, reward_accuracy: Any) -> str:
    parts = ["<h2>Headline</h2>\n"]
    heldout = {k: v for k, v in (summary.get("heldout_pass_rate") or {}).items() if v is not None}
    heldout_ci = summary.get("heldout_pass_rate_ci") or {}
    if heldout:
        names = list(heldout)
        parts.append("<p>Held-out prompt-level constraint pass rate (all of a prompt's constraints met), "
                     "with its bootstrap 95% interval over prompts:</p>\n")
        parts.append(render_table(["policy", *names],
                                  [["pass rate", *(fmt_ci(heldout[n], heldout_ci.get(n), "pct") for n in names)]]))
        if isinstance(heldout.get("final"), (int, float)) and isinstance(heldout.get("base"), (int, float)):
            gain = 100 * (heldout["final"] - heldout["base"])
            final = ((eval_round or (0, {}))[1].get("policies") or {}).get("final") or {}
            ci = final.get("pass_rate_prompt_delta_ci")
            paired = f" (paired 95% interval {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})" if ci else ""
            parts.append(f"<p>Final policy vs base: <b>{gain:+.1f} points</b>{html.escape(paired)}.</p>\n")
    facts = [["reward model held-out pair accuracy",  # then one row per pair source
              fmt_ci(reward_accuracy, summary.get("reward_accuracy_ci"), "pct")]]
    facts += [[f"on {src} pairs ({v.get('pairs')})", fmt_ci(v.get("accuracy"), v.get("ci"), "pct")]
              for src, v in (summary.get("reward_accuracy_by_source") or {}).items()]
    facts += [["rounds", fmt(len(summary.get("rounds") or []) or None)],
             ["seconds", fmt(summary.get("seconds"))]]
    parts.append(render_table(["figure", "value"], facts))
    if eval_round is None:
        parts.append(note("No eval summary found in any round."))
        return "".join(parts)
    r, ev = eval_round
    reference = ev.get("reference", "reference")
    header = ["policy", "pass rate (prompt)", "pass rate (instruction)", "mean reward", f"win rate vs {reference}",
              f"length-controlled win rate vs {reference}", f"KL to {reference}", "mean length (tokens)"]
    rows = [[name, fmt_ci(f.get("pass_rate_prompt"), f.get("pass_rate_prompt_ci"), "pct"),
             fmt_ci(f.get("pass_rate_instruction"), f.get("pass_rate_instruction_ci"), "pct"),
             fmt_ci(f.get("mean_reward"), f.get("mean_reward_ci"), "signed"),
             fmt_ci(f.get("win_rate"), f.get("win_rate_ci"), "pct"),
             fmt_ci(f.get("win_rate_lc"), f.get("win_rate_lc_ci"), "pct"), fmt(f.get("kl_to_reference")),
             fmt(f.get("mean_length"))]
            for name, f in (ev.get("policies") or {}).items()]
    parts.append(f"<p>Round {r} evaluation on {fmt(ev.get('prompts'))} held-out prompts "
                 f"(judge: the round's reward model):</p>\n")
    parts.append(render_table(header, rows))
    sampling = ev.get("sampling") or {}
    method = ev.get("kl_method") or "main_responses"
    kl_text = {"separate_sample": f"KL estimated on a separate temperature-1 sample ({fmt(ev.get('kl_sample'))}).",
               "main_responses": "KL estimated on the evaluated responses (temperature-1 samples).",
               "main_responses_biased": "KL estimated on greedy or tempered responses: biased, read it as a trend."}
    cached = ev.get("cached_policies")
    if cached:
        parts.append(note(f"Answers from eval's cache (an earlier eval of the same weights, tokenizer, prompts and "
                          f"settings; judged afresh by this round's reward model): {', '.join(cached)}."))
    parts.append(note(f"Decoding: {fmt(sampling)}. {kl_text.get(method, method)} "
                      "Length-controlled win rate: the reward model's win rate predicted at equal response length "
                      "(logistic fit on the length difference); a win rate far above it is bought with length. "
                      "Brackets: bootstrap 95% intervals over prompts."))
    return "".join(parts)


def render_arena(summary: dict[str, Any]) -> str:
    """The blind arena: win rate per pair of policies and a Bradley-Terry score per policy, with intervals."""
    arena = summary.get("arena")
    if not arena:
        return ""
    parts = ["<h2>Arena</h2>\n", f"<p>Blind A/B votes in labeler project {html.escape(str(arena.get('project')))}: "
             f"{fmt(arena.get('votes'))} vote(s). A win counts 1, a tie or both bad ½; brackets: bootstrap 95% "
             "intervals over prompts.</p>\n"]
    pairs = [v for v in arena.values() if isinstance(v, dict) and "win_rate" in v]
    if pairs:
        parts.append(render_table(
            ["policy", "vs", "wins", "losses", "ties", "both bad", "votes", "win rate [95% CI]"],
            [[p["policy"], p["opponent"], fmt(p["wins"]), fmt(p["losses"]), fmt(p["ties"]), fmt(p["both_bad"]),
              fmt(p["votes"]), fmt_ci(p["win_rate"], p.get("win_rate_ci"), "pct")] for p in pairs]))
    bt = arena.get("bradley_terry") or {}
    if bt:
        parts.append(render_table(["policy", "Bradley-Terry score [95% CI]", "votes"],
                                  [[n, fmt_ci(v["score"], v.get("ci"), "signed"), fmt(v.get("votes"))]
                                   for n, v in sorted(bt.items(), key=lambda kv: -kv[1]["score"])]))
    if not pairs:
        parts.append(note("No votes yet: annotators vote in the labeler; the next `rlhf loop` run picks them up."))
    return "".join(parts)


def render_guard(rounds: list[tuple[int, Path]], plot_dir: Path) -> str:
    """The on-policy stage's reward-hacking guard (rlhf.onpolicy): per iteration, the reward model's score next to
    the held-out pass rate (or, without constraints, a pointer to the arena) and the length, chart and table."""
    from rlhf.onpolicy import write_guard_plot

    found = [(r, op) for r, folder in rounds
             if (op := read_json(folder / "onpolicy" / "summary.json")) and op.get("per_iteration")]
    if not found:
        return ""
    r, op = found[-1]
    records = op["per_iteration"]
    sampled = {m["policy_after_iterations"]: m for m in records + ([op["final"]] if op.get("final") else [])}
    heldout = {h["policy_after_iterations"]: h for h in ([op["heldout_sft"]] if op.get("heldout_sft") else [])
               + [m["heldout"] for m in records if m.get("heldout")]}
    settings = (op.get("heldout_sft") or {}).get("settings") or {}
    heldout_text = (f"; held-out: greedy answers to {fmt(settings.get('prompts'))} held-out prompts, scored by the same "
                    "reward model" if heldout else "")
    parts = ["<h2>Reward-hacking guard (on-policy iterations)</h2>\n",
             f"<p>Round {r}: the policy after each iteration of <code>rlhf onpolicy</code> (0 = the SFT model). "
             f"Training samples: each iteration's own samples (temperature sampling, train prompts){heldout_text}.</p>\n"]
    path = write_guard_plot(plot_dir / "onpolicy_guard.png", op)
    parts.append(embed_png(path, "reward model score, held-out pass rate and response length per on-policy iteration"))
    constrained = bool(heldout) and all("pass_rate_prompt" in h for h in heldout.values())
    header = ["DPO iterations", "reward (training samples)", "reward (held-out)", "pass rate (held-out)",
              "win rate vs SFT (held-out)", "length-controlled win rate vs SFT", "length (training samples)",
              "length (held-out)", "KL to SFT (training samples)"]
    rows = []
    for x in sorted(set(sampled) | set(heldout)):
        m, h = sampled.get(x, {}), heldout.get(x, {})
        rows.append([fmt(x), fmt(m.get("mean_reward"), "signed"),
                     fmt_ci(h.get("mean_reward"), h.get("mean_reward_ci"), "signed"),
                     fmt_ci(h.get("pass_rate_prompt"), h.get("pass_rate_prompt_ci"), "pct"),
                     fmt_ci(h.get("win_rate"), h.get("win_rate_ci"), "pct"),
                     fmt_ci(h.get("win_rate_lc"), h.get("win_rate_lc_ci"), "pct"), fmt(m.get("mean_length")),
                     fmt(h.get("mean_length")), fmt(m.get("kl_to_reference"))])
    parts.append(render_table(header, rows))
    if not heldout:
        parts.append(note("The held-out guard was off (onpolicy's eval_prompts_file unset): training-sample figures only, "
                          "which cannot show the policy gaming the reward model."))
    elif constrained:
        parts.append(note("A reward score that rises while the held-out pass rate falls, or a win rate far above its "
                          "length-controlled value, is the policy gaming the reward model. Bands and brackets: "
                          "bootstrap 95% intervals over prompts."))
    else:
        parts.append(note("These held-out prompts carry no constraints, so there is no verifiable pass rate: the quality "
                          "reference is the arena's human win rate (Arena section). The reward score and win rates here "
                          "are the reward model's own judgement; a win rate far above its length-controlled value is "
                          "bought with length. Bands and brackets: bootstrap 95% intervals over prompts."))
    return "".join(parts)


def render_rounds(summary: dict[str, Any], rounds: list[tuple[int, Path]]) -> str:
    """Per round: the loop's own record (scalars of summary['rounds']) and each stage's steps, losses, time."""
    parts = ["<h2>Rounds and stages</h2>\n"]
    records = [round_cells(r) for r in summary.get("rounds") or [] if isinstance(r, dict)]
    if records:
        keys = list(dict.fromkeys(k for r in records for k in r))
        parts.append(render_table(keys, [[fmt(r.get(k)) for k in keys] for r in records]))
    for r, folder in rounds:
        rows = []
        for stage in ("generate", "sft", "reward", "dpo", "rl", "onpolicy", "eval", "export"):
            stage_dir = folder / stage
            if not stage_dir.is_dir():
                continue
            metrics = read_jsonl(stage_dir / "metrics.jsonl")
            stage_summary = read_json(stage_dir / "summary.json") or {}
            losses = [m["loss"] for m in metrics if isinstance(m.get("loss"), (int, float))]
            steps = [m["step"] for m in metrics if isinstance(m.get("step"), (int, float))]
            # stage summaries name their runtime differently; TRL's last log line always has train_runtime
            seconds = next((source[k] for source in (stage_summary, *reversed(metrics))
                            for k in ("train_runtime_s", "seconds", "train_runtime")
                            if isinstance(source.get(k), (int, float))), None)
            labels = (read_json(stage_dir / "run.json") or {}).get("labels") or []
            used = read_json(stage_dir / "resources.json") or {}  # the loop's measurement: whole stage, load to save
            rows.append([stage, fmt(max(steps) if steps else None), fmt(losses[0] if losses else None),
                         fmt(losses[-1] if losses else None), fmt(seconds), fmt(used.get("seconds")),
                         fmt(used.get("peak_rss_gb")),
                         fmt(", ".join(str(x.get("content_hash")) for x in labels) or None)])
        if rows:
            parts.append(f"<h3>Round {r}</h3>\n")
            parts.append(render_table(["stage", "steps", "first loss", "last loss", "train seconds", "stage seconds",
                                       "peak memory (GiB)", "trained on labels"], rows))
    return "".join(parts)


def round_cells(record: dict[str, Any]) -> dict[str, Any]:
    """The loop's record of a round as flat cells: scalars, and one level into mappings (labels.id ...).
    The nested eval figures and the stage folders have their own sections, so they are left out here."""
    cells: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key not in ("eval", "stages", "resources"):
            cells.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, (dict, list)):
            cells[key] = value
    return cells


def stage_curves(rounds: list[tuple[int, Path]], stage: str, keys: tuple[str, ...]) -> dict[str, tuple[list, list]]:
    """One (steps, values) line per round for the first key the stage logged; rounds without it are left out."""
    lines = {}
    for r, folder in rounds:
        metrics = read_jsonl(folder / stage / "metrics.jsonl")
        for key in keys:
            points = [(m["step"], m[key]) for m in metrics
                      if isinstance(m.get(key), (int, float)) and isinstance(m.get("step"), (int, float))]
            if points:
                lines[f"round {r}"] = ([x for x, _ in points], [y for _, y in points])
                break
    return lines


def render_curves(rounds: list[tuple[int, Path]], plot_dir: Path) -> str:
    from rlhf.plots import plot_panels

    parts = ["<h2>Training curves</h2>\n"]
    losses = {stage: lines for stage in TRAINING_STAGES if (lines := stage_curves(rounds, stage, ("loss",)))}
    if losses:
        path = plot_panels(plot_dir / "losses.png", {f"{s}: loss": v for s, v in losses.items()},
                           title="training loss per stage", xlabel="step")
        parts.append(embed_png(path, "training loss per stage"))
    else:
        parts.append(note("No training metrics found."))
    rewards = {title: lines for title, stage, keys in REWARD_PANELS if (lines := stage_curves(rounds, stage, keys))}
    if rewards:
        path = plot_panels(plot_dir / "reward_curves.png", rewards, title="reward model, DPO and RL figures",
                           xlabel="step")
        parts.append(embed_png(path, "reward model accuracy, DPO reward margins, RL reward and KL"))
    return "".join(parts)


def render_pass_rates(evals: list[tuple[int, dict]], plot_dir: Path) -> str:
    from rlhf.eval import write_pass_rate_plots
    from rlhf.plots import plot_lines

    r, ev = evals[-1]
    figures = ev.get("policies") or {}
    if not figures or not all("pass_rate_prompt" in f and "pass_rate_by_type" in f for f in figures.values()):
        return ""
    parts = ["<h2>Constraint pass rates</h2>\n", f"<p>Round {r}, per policy and per constraint type:</p>\n"]
    for path in write_pass_rate_plots(plot_dir, figures):
        parts.append(embed_png(path, path.stem.replace("_", " ")))
    types = sorted({t for f in figures.values() for t in f["pass_rate_by_type"]})
    names = list(figures)
    parts.append(render_table(["constraint type", *names],
                              [[t, *(fmt(figures[n]["pass_rate_by_type"].get(t), "pct") for n in names)] for t in types]))
    if len(evals) > 1:
        names = list(dict.fromkeys(n for _, e in evals for n in e.get("policies") or {}))
        series = {n: [(e.get("policies") or {}).get(n, {}).get("pass_rate_prompt", float("nan")) for _, e in evals]
                  for n in names}
        path = plot_lines(plot_dir / "pass_rate_rounds.png", [r for r, _ in evals], series,
                          title="prompt-level pass rate per round", xlabel="round", ylabel="pass rate")
        parts.append(embed_png(path, "prompt-level pass rate per round"))
    return "".join(parts)


def render_responses(eval_dir: Path, plot_dir: Path) -> str:
    from rlhf.plots import plot_histograms

    records = read_jsonl(eval_dir / "responses.jsonl")
    if not records:
        return ""
    names = list(dict.fromkeys(r["policy"] for r in records))
    lengths = {n: [r["tokens"] for r in records if r["policy"] == n] for n in names}
    parts = ["<h2>Response length</h2>\n"]
    path = plot_histograms(plot_dir / "lengths.png", lengths, title="response length on held-out prompts",
                           xlabel="tokens")
    parts.append(embed_png(path, "response length distribution per policy"))
    parts.append(f"<h2>Examples ({eval_dir.parent.name})</h2>\n")
    prompts = list(dict.fromkeys(json.dumps(r["prompt"], sort_keys=True) for r in records))[:EXAMPLES]
    for key in prompts:
        answers = [r for r in records if json.dumps(r["prompt"], sort_keys=True) == key]
        prompt = answers[0]["prompt"]
        text = prompt if isinstance(prompt, str) else "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
        parts.append(f"<p><b>Prompt:</b> {html.escape(text)}</p>\n")
        rows = [[a["policy"], a["response"][:600],
                 fmt(f"{sum(a['constraints_met'])}/{len(a['constraints_met'])}" if "constraints_met" in a else None),
                 fmt(a.get("reward"), "signed")] for a in answers]
        parts.append(render_table(["policy", "response", "constraints met", "reward"], rows, text_columns=(1,)))
    return "".join(parts)


def render_provenance(rounds: list[tuple[int, Path]]) -> str:
    """Which labels (id, content hash, counts) trained each round: the model card cites the same hash."""
    parts = ["<h2>Labels provenance</h2>\n"]
    found = False
    for r, folder in rounds:
        meta = read_json(folder / "labels" / "export.json")
        if meta is None:
            continue
        found = True
        rows = [[k, fmt(meta.get(k))] for k in ("id", "project", "created_at", "content_hash", "format")
                if meta.get(k) is not None]
        counts = meta.get("counts") or {}
        rows += [[f"counts: {k}", fmt(v)] for k, v in counts.items()]
        rows += [[f"filter: {k}", fmt(v)] for k, v in (meta.get("filters") or {}).items()]
        pairs = read_jsonl(folder / "labels" / "preferences.jsonl")
        if pairs:  # who ranked: simulated annotators are named as such, never passed off as people
            annotators = sorted({a for p in pairs for a in p.get("annotators") or []})
            rows.append(["pairs from simulated annotators", f"{sum(bool(p.get('simulated')) for p in pairs)} of {len(pairs)}"])
            rows.append(["annotators", ", ".join(annotators) or "–"])
        parts.append(f"<h3>Round {r}: labels</h3>\n")
        parts.append(render_table(["field", "value"], rows))
    if not found:
        parts.append(note("No labels (labels/export.json) found in any round."))
    return "".join(parts)


# ---- the report --------------------------------------------------------------------------------------


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write <run_dir>/report.html from what the loop left in the run folder; returns its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RlhfError(f"run folder not found: {run}")
    summary = read_json(run / "summary.json") or {}
    rounds = find_rounds(run)
    if not summary and not rounds:
        raise RlhfError(f"{run}: neither summary.json nor round-<n> folders: is this a loop run folder?")
    evals = [(r, ev) for r, folder in rounds if (ev := read_json(folder / "eval" / "summary.json"))]
    reward_accuracy = summary.get("reward_accuracy")
    if reward_accuracy is None and rounds:
        reward_accuracy = (read_json(rounds[-1][1] / "reward" / "summary.json") or {}).get("heldout_accuracy")

    with tempfile.TemporaryDirectory(prefix="rlhf-report-") as tmp:
        plot_dir = Path(tmp)
        sections = [
            render_headline(summary, evals[-1] if evals else None, reward_accuracy),
            render_arena(summary),
            render_guard(rounds, plot_dir),
            render_pass_rates(evals, plot_dir) if evals else "",
            render_curves(rounds, plot_dir),
            render_responses(dict(rounds)[evals[-1][0]] / "eval", plot_dir) if evals else "",
            render_provenance(rounds),
            render_rounds(summary, rounds),
        ]
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    title = f"rlhf-loop report: {run.resolve().name}"
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + note(f"Run folder {run}, written {created}.")
        + "".join(sections)
        + "</body>\n</html>\n"
    )
    out = run / "report.html"
    tmp_out = out.with_suffix(".html.tmp")
    tmp_out.write_text(page, encoding="utf-8")
    os.replace(tmp_out, out)  # a reader never sees a half-written report
    return out
