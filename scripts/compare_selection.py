"""Active vs random selection of the pairs annotators label: reward-model accuracy against the number of labels.

    .venv/bin/python scripts/compare_selection.py --tasks runs/quickstart/round-1/generate/tasks.jsonl
    .venv/bin/python scripts/compare_selection.py --train-prompts 32 --k 4 --rounds 4 --batch 16 --error-rate 0.1

The question behind `rlhf loop --selection uncertain`: if annotators only see the candidate pairs the
current reward model is least sure of (smallest |r_i - r_j|), does the reward model get better per label
than when they see random pairs? The simulated annotator answers in place of people: it prefers the
response that meets more of the prompt's constraints (rlhf/simulate.py rank_by_constraints), ties where
both meet as many, and flips a judgment with probability --error-rate.

Procedure (both strategies share the seed, the pool, the held-out pairs and the training settings):
  1. Candidates: K responses per train prompt (--tasks, e.g. a loop round's generate/tasks.jsonl, or
     generated here from --model). The pool is every pair of a prompt's candidates. Held-out pairs: every
     pair of a held-out prompt's candidates the (error-free) simulated ranking orders (--heldout-tasks, or
     generated from the prompt set's held-out split); ties give no pair.
  2. Both strategies start from the same random --seed-pairs labelled pairs. Each round trains a reward
     model with `rlhf reward` (--reward-config plus the overrides below) on the labelled pairs, reads its
     held-out accuracy, then sends --batch more pairs from the pool to the simulated annotator:
       random     a seeded random sample of the unlabelled pairs
       uncertain  the unlabelled pairs with the smallest reward gap under this round's reward model
  3. Labels counts pairs sent to the annotator; a pair judged a tie costs a label but trains nothing
     (the table's "pairs" column counts the ordered ones). Results: <out>/selection.json (the curves and
     every round), <out>/selection.png (accuracy against labels, one line per strategy), a table.

Re-running the same command resumes: finished reward models (summary.json) and generated candidates are
reused. Sized for a 2-core CPU by default; every reward model is a LoRA adapter on --model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout, like the other scripts/

from rlhf.errors import RlhfError  # noqa: E402
from rlhf.selection import least_certain  # noqa: E402

STRATEGIES = ("random", "uncertain")
DEFAULT_REWARD_CONFIG = ROOT / "rlhf" / "recipes" / "quickstart" / "reward.yaml"


def log(message: str) -> None:
    print(f"[compare_selection {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- pure pieces: pairs, judgments, selection ---------------------------------------------------------------


def candidate_pairs(tasks: list[dict]) -> list[tuple[int, int, int]]:
    """Every unordered pair of a task's candidates, as (task index, i, j) with i < j, in file order."""
    return [(t, i, j) for t, task in enumerate(tasks) for i, j in combinations(range(len(task["responses"])), 2)]


def judge_pair(task: dict, i: int, j: int, error_rate: float, seed: int) -> dict | None:
    """The simulated annotator's preference row for candidates i and j of a task, or None for a tie.

    The judgment of a pair depends only on (seed, pair), not on the order pairs are asked in: both
    strategies then get the same (possibly flipped) answer for the same pair, and differ only in what
    they ask.
    """
    from labeler.aggregate import rank_to_pairs
    from rlhf.simulate import rank_by_constraints

    texts = [task["responses"][i]["text"], task["responses"][j]["text"]]
    rng = random.Random(f"{seed}:{task['prompt']}:{i}:{j}")
    ranks = rank_by_constraints(task["meta"]["constraints"], texts, error_rate, rng)
    ordered = rank_to_pairs({"0": ranks[0], "1": ranks[1]})
    if not ordered:
        return None
    chosen, rejected = ordered[0]
    return {"prompt": task["prompt"], "chosen": texts[int(chosen)], "rejected": texts[int(rejected)]}


def heldout_preferences(tasks: list[dict]) -> list[dict]:
    """Every pair the error-free simulated ranking orders, per task, as TRL preference rows."""
    from labeler.aggregate import rank_to_pairs
    from rlhf.simulate import rank_by_constraints

    rows = []
    for task in tasks:
        texts = [r["text"] for r in task["responses"]]
        ranks = rank_by_constraints(task["meta"]["constraints"], texts, 0.0)
        for better, worse in rank_to_pairs({str(n): rank for n, rank in enumerate(ranks)}):
            rows.append({"prompt": task["prompt"], "chosen": texts[int(better)], "rejected": texts[int(worse)]})
    return rows


# --- candidates ---------------------------------------------------------------------------------------------


def read_tasks(path: str | os.PathLike) -> list[dict]:
    """Tasks JSONL ({"prompt", "responses": [{"text"}], "meta": {"constraints"}}), checked line by line."""
    from rlhf.constraints import validate_constraint

    path = Path(path)
    if not path.is_file():
        raise RlhfError(f"tasks file not found: {path}")
    from rlhf.data import read_rows

    tasks = []
    for where, task in read_rows(path):
        if not isinstance(task.get("prompt"), str):
            raise RlhfError(f"{where}: field 'prompt' must be a string")
        responses = task.get("responses")
        if not isinstance(responses, list) or len(responses) < 2 or \
                not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in responses):
            raise RlhfError(f"{where}: field 'responses' must be a list of at least 2 {{\"text\": ...}} objects")
        constraints = (task.get("meta") or {}).get("constraints")
        if not isinstance(constraints, list) or not constraints:
            raise RlhfError(f"{where}: field 'meta.constraints' must be a non-empty list (the simulated "
                            "annotator ranks by constraints met); tasks from `rlhf generate` on the prompt set have it")
        for c in constraints:
            try:
                validate_constraint(c)
            except RlhfError as exc:
                raise RlhfError(f"{where}: field 'meta.constraints': {exc}") from None
        tasks.append(task)
    if not tasks:
        raise RlhfError(f"{path}: no tasks")
    return tasks


def generate_tasks(model_path: str, rows: list[dict], args: argparse.Namespace, path: Path) -> list[dict]:
    """K sampled candidates per prompt row from the model, written as a tasks file (reused on a re-run)."""
    if path.is_file():
        log(f"candidates: reusing {path}")
        return read_tasks(path)
    from rlhf.generate import generate_responses, write_tasks
    from rlhf.models import load_causal_lm, load_tokenizer

    log(f"candidates: {args.k} per prompt for {len(rows)} prompts from {model_path} -> {path}")
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path)
    texts = generate_responses(model, tokenizer, [r["prompt"] for r in rows], args.k,
                               max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    tasks = [{"prompt": row["prompt"], "responses": [{"text": t, "model": model_path} for t in candidates],
              "meta": {key: value for key, value in row.items() if key != "prompt"}}
             for row, candidates in zip(rows, texts)]
    write_tasks(path, tasks)
    return tasks


# --- reward models ------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def train_reward(args: argparse.Namespace, model_path: str, train_file: Path, heldout_file: Path, out: Path) -> dict:
    """`rlhf reward` on the labelled pairs (skipped when out/summary.json exists); returns its summary."""
    from rlhf.reward import main as reward_main

    summary = out / "summary.json"
    if not summary.is_file():
        argv = ["--config", str(args.reward_config), "--model_name_or_path", model_path,
                "--train_file", str(train_file), "--eval_file", str(heldout_file), "--output_dir", str(out),
                "--seed", str(args.seed), "--report_to", "none",
                "--save_strategy", "no"]  # one short run per round: checkpoints would only cost disk and time
        if args.max_steps:
            argv += ["--max_steps", str(args.max_steps)]
        if args.num_train_epochs:
            argv += ["--num_train_epochs", str(args.num_train_epochs)]
        started = time.time()
        code = reward_main(argv)
        if code:
            raise RlhfError(f"rlhf reward failed with exit code {code} ({out})")
        log(f"reward: trained in {time.time() - started:.0f} s -> {out}")
    return json.loads(summary.read_text())


def score_pool(reward_dir: Path, tasks: list[dict], pool: list[tuple[int, int, int]]) -> dict[tuple[int, int], float]:
    """Reward of every candidate that appears in the pool, keyed (task index, candidate index); each scored once."""
    from rlhf.reward import load_reward_model, score_texts

    keys = sorted({(t, i) for t, i, _ in pool} | {(t, j) for t, _, j in pool})
    model, tokenizer = load_reward_model(str(reward_dir))
    scores = score_texts(model, tokenizer, [tasks[t]["prompt"] for t, _ in keys],
                         [tasks[t]["responses"][i]["text"] for t, i in keys])
    return dict(zip(keys, scores))


def select_next(strategy: str, pool: list[tuple[int, int, int]], n: int, reward_dir: Path, tasks: list[dict],
                rng: random.Random) -> tuple[list[tuple[int, int, int]], dict]:
    """The next n pool pairs to label, and the reward gap of each under the current model (uncertain only)."""
    if strategy == "random":
        return rng.sample(pool, min(n, len(pool))), {}
    scores = score_pool(reward_dir, tasks, pool)
    pairs = [((t, i), (t, j)) for t, i, j in pool]
    chosen = least_certain(pairs, scores, n)
    picked = [(a[0], a[1], b[1]) for a, b in chosen]
    return picked, {p: abs(scores[(p[0], p[1])] - scores[(p[0], p[2])]) for p in picked}


# --- the comparison -----------------------------------------------------------------------------------------


def run_strategy(strategy: str, args: argparse.Namespace, model_path: str, tasks: list[dict],
                 pool: list[tuple[int, int, int]], seed_set: list[tuple[int, int, int]], heldout_file: Path,
                 out: Path) -> list[dict]:
    """Rounds of train -> measure -> select -> label for one strategy; one record per round."""
    rng = random.Random(f"{args.seed}:{strategy}")
    labelled = list(seed_set)
    seeded = set(seed_set)
    unlabelled = [p for p in pool if p not in seeded]
    records = []
    for round_no in range(1, args.rounds + 1):
        rows = [row for row in (judge_pair(tasks[t], i, j, args.error_rate, args.seed) for t, i, j in labelled) if row]
        # Round 1 trains on the shared seed set: one reward model serves both strategies.
        rdir = out / "seed" if round_no == 1 else out / strategy / f"round-{round_no}"
        train_file = write_jsonl(rdir / "train.jsonl", rows)
        summary = train_reward(args, model_path, train_file, heldout_file, rdir / "reward")
        record = {"round": round_no, "labels": len(labelled), "pairs": len(rows),
                  "heldout_accuracy": summary["heldout_accuracy"], "heldout_margin": summary.get("heldout_margin"),
                  "reward_dir": str(rdir / "reward")}
        records.append(record)
        log(f"{strategy} round {round_no}: {record['labels']} labels ({record['pairs']} ordered pairs) -> "
            f"held-out accuracy {record['heldout_accuracy']:.3f}")
        if round_no == args.rounds:
            break
        if not unlabelled:
            log(f"{strategy}: the pool is used up after round {round_no}")
            break
        picked, gaps = select_next(strategy, unlabelled, args.batch, rdir / "reward", tasks, rng)
        write_jsonl(out / strategy / f"round-{round_no}" / "selected.jsonl", [
            {"task": t, "i": i, "j": j, "reward_gap": gaps.get((t, i, j)),
             "judgment": judge_pair(tasks[t], i, j, args.error_rate, args.seed)} for t, i, j in picked])
        chosen = set(picked)
        labelled += picked
        unlabelled = [p for p in unlabelled if p not in chosen]
    return records


def curves_of(results: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    return {name: {key: [r[key] for r in records] for key in ("labels", "pairs", "heldout_accuracy")}
            for name, records in results.items()}


def print_table(results: dict[str, list[dict]]) -> None:
    print()
    print(f"{'round':>5} {'labels':>7} " + " ".join(f"{name + ' acc':>14} {'pairs':>6}" for name in results))
    for n in range(max(len(r) for r in results.values())):
        first = next(r[n] for r in results.values() if n < len(r))
        cells = []
        for records in results.values():
            r = records[n] if n < len(records) else None
            cells.append(f"{r['heldout_accuracy']:>14.3f} {r['pairs']:>6}" if r else f"{'-':>14} {'-':>6}")
        print(f"{first['round']:>5} {first['labels']:>7} " + " ".join(cells))


def check_disjoint(tasks: list[dict], heldout_tasks: list[dict]) -> None:
    shared = {t["prompt"] for t in tasks} & {t["prompt"] for t in heldout_tasks}
    if shared:
        raise RlhfError(f"{len(shared)} held-out prompt(s) are also train prompts (e.g. {sorted(shared)[0][:60]!r}): "
                        "the accuracy would not be held out; give --heldout-tasks for other prompts")


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """A re-run may resume only the same comparison: finished reward models would otherwise be reused wrongly."""
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise RlhfError(f"{path}: {out} holds a comparison with other settings ({', '.join(changed)}); "
                            "use another --out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare_selection.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group("candidates")
    src.add_argument("--model", default="smollm2-135m-instruct",
                     help="base of every reward model (LoRA + score head), and the policy that writes candidates "
                          "when --tasks/--heldout-tasks are not given: a model folder or smollm2-135m-instruct")
    src.add_argument("--tasks", help="train candidates: a tasks JSONL whose meta holds 'constraints', e.g. "
                                     "runs/<name>/round-1/generate/tasks.jsonl; default: generate from --model")
    src.add_argument("--heldout-tasks", help="held-out candidates (tasks JSONL of other prompts); default: generate "
                                             "from --model for the prompt set's held-out split")
    src.add_argument("--prompts-file", help="prompt set with 'split' and 'constraints' to generate from "
                                            "(default: the bundled instruction-following set)")
    src.add_argument("--train-prompts", type=int, default=24, help="train prompts to generate for (default 24)")
    src.add_argument("--heldout-prompts", type=int, default=16, help="held-out prompts to generate for (default 16)")
    src.add_argument("--k", type=int, default=4, help="candidates per generated prompt (default 4: 6 pairs a prompt)")
    src.add_argument("--max-new-tokens", type=int, default=96, help="longest generated candidate (default 96)")
    src.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    sel = parser.add_argument_group("selection")
    sel.add_argument("--seed-pairs", type=int, default=16,
                     help="pairs labelled at random before the first reward model, the same for both strategies "
                          "(default 16)")
    sel.add_argument("--batch", type=int, default=16, help="pairs sent to the annotator per round (default 16)")
    sel.add_argument("--rounds", type=int, default=3,
                     help="reward models trained per strategy: labels go seed, seed+batch, ... (default 3)")
    sel.add_argument("--error-rate", type=float, default=0.0,
                     help="the simulated annotator flips a training judgment with this probability; held-out "
                          "pairs are always judged without error (default 0)")
    sel.add_argument("--seed", type=int, default=0, help="seed of the seed set, random picks, flips, sampling, training")
    rm = parser.add_argument_group("reward model")
    rm.add_argument("--reward-config", default=str(DEFAULT_REWARD_CONFIG),
                    help="`rlhf reward` YAML config; model, data, output and seed are set here (default "
                         "the quickstart recipe, rlhf/recipes/quickstart/reward.yaml)")
    rm.add_argument("--num-train-epochs", type=float, default=2.0,
                    help="epochs over the labelled pairs per reward model (default 2; 0 = the config's)")
    rm.add_argument("--max-steps", type=int, default=0,
                    help="cap on optimizer steps per reward model, overriding epochs (default 0 = no cap)")
    parser.add_argument("--out", default="runs/compare-selection",
                        help="output folder: selection.json, selection.png, one folder per strategy and round")
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in ("seed_pairs", "batch", "rounds", "train_prompts", "heldout_prompts", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise RlhfError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.k < 2:
        raise RlhfError(f"--k must be at least 2 (a pair needs two candidates), got {args.k}")
    if not 0.0 <= args.error_rate <= 1.0:
        raise RlhfError(f"--error-rate must be between 0 and 1, got {args.error_rate}")
    if not Path(args.reward_config).is_file():
        raise RlhfError(f"--reward-config: config file not found: {args.reward_config}")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    check_args(args)
    from rlhf.models import resolve_model_path
    from rlhf.plots import plot_lines
    from rlhf.prompt_set import load_prompt_set

    started = time.time()
    model_path = resolve_model_path(args.model, field="--model")
    # Given files are checked before anything is written.
    tasks = read_tasks(args.tasks) if args.tasks else None
    heldout_tasks = read_tasks(args.heldout_tasks) if args.heldout_tasks else None
    if tasks and heldout_tasks:
        check_disjoint(tasks, heldout_tasks)
    out = Path(args.out)
    check_settings(out, vars(args))

    if tasks is None:
        train_rows = load_prompt_set("train", path=args.prompts_file)
        rows = random.Random(args.seed).sample(train_rows, min(args.train_prompts, len(train_rows)))
        tasks = generate_tasks(model_path, rows, args, out / "tasks-train.jsonl")
    if heldout_tasks is None:
        heldout_rows = load_prompt_set("heldout", path=args.prompts_file)[: args.heldout_prompts]
        heldout_tasks = generate_tasks(model_path, heldout_rows, args, out / "tasks-heldout.jsonl")
    check_disjoint(tasks, heldout_tasks)
    heldout = heldout_preferences(heldout_tasks)
    if not heldout:
        raise RlhfError(f"{args.heldout_tasks or out / 'tasks-heldout.jsonl'}: every held-out candidate ties on "
                        "constraints met, so there is no held-out pair to measure accuracy on")
    heldout_file = write_jsonl(out / "heldout-pairs.jsonl", heldout)

    pool = candidate_pairs(tasks)
    if len(pool) <= args.seed_pairs:
        raise RlhfError(f"the pool has {len(pool)} candidate pairs, not more than --seed-pairs {args.seed_pairs}: "
                        "nothing would be left to select; use more prompts or fewer seed pairs")
    seed_set = random.Random(args.seed).sample(pool, args.seed_pairs)
    if not any(judge_pair(tasks[t], i, j, args.error_rate, args.seed) for t, i, j in seed_set):
        raise RlhfError(f"every one of the {args.seed_pairs} seed pairs is a tie on constraints met: nothing to "
                        "train the first reward model on; raise --seed-pairs or use candidates that differ more")
    write_jsonl(out / "seed" / "selected.jsonl", [
        {"task": t, "i": i, "j": j, "reward_gap": None, "judgment": judge_pair(tasks[t], i, j, args.error_rate, args.seed)}
        for t, i, j in seed_set])
    log(f"pool: {len(pool)} candidate pairs from {len(tasks)} prompts; held-out: {len(heldout)} pairs from "
        f"{len(heldout_tasks)} prompts; seed set {args.seed_pairs}, {args.batch} per round, {args.rounds} rounds")

    results = {s: run_strategy(s, args, model_path, tasks, pool, seed_set, heldout_file, out) for s in STRATEGIES}
    curves = curves_of(results)
    labels = max((c["labels"] for c in curves.values()), key=len)
    plot = plot_lines(out / "selection.png", labels,
                      {name: c["heldout_accuracy"] for name, c in curves.items()},
                      title=f"reward model: active vs random selection (error rate {args.error_rate:g})",
                      xlabel="labels (pairs sent to the simulated annotator)", ylabel="held-out pair accuracy")
    report = {
        "curves": curves,
        "rounds": results,
        "pool_pairs": len(pool),
        "heldout_pairs": len(heldout),
        "simulated_annotator": {"judge": "constraints met (rlhf.simulate.rank_by_constraints)",
                                "error_rate": args.error_rate},
        "settings": vars(args),
        "seconds": round(time.time() - started, 1),
        "plot": str(plot),
    }
    tmp = out / ".selection.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "selection.json")
    print_table(results)
    print(f"\n-> {out / 'selection.json'}, {plot}  ({report['seconds']:.0f} s)")
    return report


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(argv)
    except RlhfError as exc:
        print(f"compare_selection: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
