"""The closed loop: the policy writes candidates, annotators rank them, the rankings train a better policy.

    rlhf loop --config configs/quickstart.yaml             # what `make quickstart` runs
    rlhf loop --config configs/quickstart.yaml --rounds 2  # the round-1 policy generates round 2

Each round r writes runs/<name>/round-<r>/:
  prompts.jsonl  train prompts of this round (from the bundled instruction-following prompt set)
  generate/      K candidates per prompt from the current policy (round 1: the base model)
  (labeler)      tasks pushed to project <name>-round-<r> in the labeler database, then labelled:
                 annotators: simulated  - simulated annotator accounts label through the labeler's HTTP API
                                          (with simulated_edits they also hand-fix the best candidate
                                          where they can: rlhf/edits.py)
                 annotators: human      - the loop stops after pushing, prints the URL; run the same command
                                          again once the labels are in and it continues from there
  labels/        `labeler export` of the project: preferences, SFT rows, raw annotations, content hash
  sft/ reward/ dpo/ [rl/]   the stages, each from its config under configs/<recipe>/, chained here
  eval/          base vs SFT vs final policy on the held-out prompts: constraint pass rates, reward-model
                 win rate, KL, length; the reward model's accuracy on held-out preference pairs
  export/        the round's policy as a Hugging Face folder (the last round's goes to runs/<name>/export)
runs/<name>/summary.json and report.html hold the figures of the last round. A step whose output is
complete is skipped on a re-run, and a training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError

STAGE_KEYS = ("generate", "sft", "reward", "dpo", "rl", "eval", "export")


@dataclass
class LoopArguments:
    name: str = field(default="quickstart", metadata={"help": "Run name: outputs go to runs/<name>/ (or output_dir)."})
    output_dir: str | None = field(default=None, metadata={"help": "Run folder; default runs/<name>."})
    model_name_or_path: str = field(
        default="smollm2-135m-instruct", metadata={"help": "The base policy: a model folder or smollm2-135m-instruct."}
    )
    rounds: int = field(default=1, metadata={"help": "Rounds of generate -> label -> train; round r+1 samples from round r's policy."})
    prompts_file: str | None = field(
        default=None, metadata={"help": "Prompt set with `split` (train/heldout) and `constraints`; default: the bundled set."}
    )
    train_prompts: int = field(default=160, metadata={"help": "Train prompts per round (rotating through the train split)."})
    heldout_prompts: int = field(default=0, metadata={"help": "Held-out prompts for eval; 0 = all of them."})
    k: int = field(default=4, metadata={"help": "Candidates per prompt (the labeler project's K)."})
    annotators: str = field(
        default="simulated", metadata={"help": "simulated (accounts label through the API) or human (stop and wait).",
                                       "choices": ["simulated", "human"]}
    )
    simulated_annotators: int = field(default=1, metadata={"help": "Number of simulated annotator accounts."})
    overlap: int = field(default=1, metadata={"help": "Annotators per task (the labeler project's overlap)."})
    error_rate: float = field(default=0.0, metadata={"help": "Simulated annotators flip a judgment with this probability."})
    simulated_edits: bool = field(
        default=False, metadata={"help": "Simulated annotators also fix the best candidate by hand where they can "
                                         "(rlhf/edits.py): the edit becomes an SFT row and the chosen side of pairs."})
    selection: str = field(
        default="all", metadata={"help": "all: every prompt's K candidates; uncertain: only the pairs the previous "
                                         "round's reward model is least sure of (round 1 falls back to all).",
                                 "choices": ["all", "uncertain", "random"]}
    )
    selection_budget: int = field(default=0, metadata={"help": "With selection uncertain/random: pairs to send (0 = one per prompt)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of labelled prompts held out for reward/DPO accuracy."})
    algorithm: str = field(
        default="dpo", metadata={"help": "Policy optimisation after SFT: dpo, rl (GRPO/RLOO on the reward model), or dpo+rl.",
                                 "choices": ["dpo", "rl", "dpo+rl"]}
    )
    database: str | None = field(default=None, metadata={"help": "Labeler database URL; default sqlite:///<run folder>/labels.db."})
    labeler_url: str = field(default="http://127.0.0.1:5000", metadata={"help": "Where people reach the labeler (annotators: human)."})
    generate_config: str | None = field(default=None, metadata={"help": "Stage config for generate (YAML)."})
    sft_config: str | None = field(default=None, metadata={"help": "Stage config for sft (YAML)."})
    reward_config: str | None = field(default=None, metadata={"help": "Stage config for reward (YAML)."})
    dpo_config: str | None = field(default=None, metadata={"help": "Stage config for dpo (YAML)."})
    rl_config: str | None = field(default=None, metadata={"help": "Stage config for rl (YAML)."})
    eval_config: str | None = field(default=None, metadata={"help": "Stage config for eval (YAML)."})
    export_config: str | None = field(default=None, metadata={"help": "Stage config for export (YAML)."})
    seed: int = field(default=0, metadata={"help": "Seed for prompt rotation, sampling and simulated annotators."})


def log(message: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_stage(stage: str, config: str | None, overrides: dict[str, Any]) -> Path:
    """Run one stage through its own `main` (the same path as the CLI); skip it when already complete."""
    import importlib

    out = Path(overrides["output_dir"])
    if (out / "summary.json").is_file():
        log(f"{stage}: done before ({out}), skipped")
        return out
    argv = ["--config", config] if config else []
    for key, value in overrides.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    log(f"{stage}: rlhf {stage} {' '.join(argv)}")
    started = time.time()
    code = importlib.import_module(f"rlhf.{stage}").main(argv)
    if code:
        raise RlhfError(f"stage {stage} failed with exit code {code} ({out})")
    log(f"{stage}: finished in {time.time() - started:.0f} s")
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def round_prompts(train: list[dict], n: int, round_no: int, seed: int) -> list[dict]:
    """The train prompts of a round: a seeded shuffle, taken n at a time, wrapping around."""
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n = min(n, len(train)) if n > 0 else len(train)
    start = (round_no - 1) * n
    return [train[order[(start + i) % len(train)]] for i in range(n)]


# --- the labeler side: plain-Python functions on the database, HTTP for the simulated annotators -------------


def open_labeler(url: str):
    from labeler.db import Database, upgrade_database

    upgrade_database(url)
    return Database(url)


def push_tasks(db, project_name: str, tasks: list[dict], k: int, overlap: int) -> dict:
    from labeler.importer import import_tasks, validate_task
    from labeler.models import Project
    from labeler.projects import create_project
    from sqlalchemy import select

    checked = [validate_task(t, f"task {i}", k) for i, t in enumerate(tasks)]
    with db.write() as session:
        project = session.scalar(select(Project).where(Project.name == project_name))
        if project is None:
            guidelines = ("Rank the responses by how well they follow every instruction in the prompt "
                          "(format, length, wording); break ties by helpfulness.")
            project = create_project(session, project_name, k=k, overlap=overlap, guidelines=guidelines)
        return import_tasks(session, project, checked, source="rlhf loop")


def labelling_progress(db, project_name: str) -> dict:
    from labeler.projects import count_project, find_project

    with db.read() as session:
        return count_project(session, find_project(session, project_name))


def simulated_tokens(db, count: int) -> list[str]:
    """Fresh API tokens for simulated annotator accounts sim-annotator-1..count (created once, flagged simulated)."""
    from labeler.accounts import create_token, create_user
    from labeler.models import User
    from sqlalchemy import select

    tokens = []
    with db.write() as session:
        for i in range(1, count + 1):
            name = f"sim-annotator-{i}"
            user = session.scalar(select(User).where(User.username == name))
            if user is None:
                user = create_user(session, name, secrets.token_urlsafe(16), role="annotator", simulated=True)
            tokens.append(create_token(session, user, name="rlhf loop"))
    return tokens


class LabelerServer:
    """The labeler app on a free loopback port in a background thread, for the simulated annotators."""

    def __init__(self, database_url: str):
        from werkzeug.serving import make_server

        from labeler.app import create_app

        app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": secrets.token_hex(32)})
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=10)


def label_simulated(db, database_url: str, project_name: str, args: LoopArguments, round_no: int) -> dict:
    from rlhf.simulate import run_simulation

    tokens = simulated_tokens(db, args.simulated_annotators)
    with LabelerServer(database_url) as server:
        log(f"label: {len(tokens)} simulated annotator(s) labelling {project_name} through {server.url}/api/v1")
        return run_simulation(server.url, project_name, tokens, error_rate=args.error_rate, seed=args.seed + round_no,
                              edit=args.simulated_edits)


# --- active selection ---------------------------------------------------------------------------------------


def least_certain(pairs: list[tuple], scores: dict, n: int) -> list[tuple]:
    """The n pairs (a, b) with the smallest reward gap |scores[a] - scores[b]|; equal gaps keep list order.

    The reward model is least sure which of the two is better exactly where it scores them alike.
    """
    ranked = sorted(range(len(pairs)), key=lambda k: (abs(scores[pairs[k][0]] - scores[pairs[k][1]]), k))
    return [pairs[k] for k in ranked[: max(0, n)]]


def select_pairs(tasks: list[dict], mode: str, budget: int, reward_model: str | None, seed: int) -> list[dict]:
    """Turn K-candidate tasks into 2-candidate tasks: the least certain pair per prompt by the reward model
    (|r_i - r_j| smallest), or a random pair; then keep the `budget` most uncertain (or random) ones."""
    rng = random.Random(seed)
    scored: list[tuple[float, dict]] = []
    if mode == "uncertain":
        from rlhf.reward import load_reward_model, score_texts

        model, tokenizer = load_reward_model(reward_model)
        flat_prompts = [t["prompt"] for t in tasks for _ in t["responses"]]
        flat_texts = [r["text"] for t in tasks for r in t["responses"]]
        scores = score_texts(model, tokenizer, flat_prompts, flat_texts)
        at = 0
        for task in tasks:
            s = scores[at : at + len(task["responses"])]
            at += len(task["responses"])
            (i, j), = least_certain([(i, j) for i in range(len(s)) for j in range(i + 1, len(s))], s, 1)
            gap = abs(s[i] - s[j])
            pair = dict(task, responses=[task["responses"][i], task["responses"][j]],
                        meta=dict(task.get("meta", {}), selection={"mode": mode, "reward_gap": gap}))
            scored.append((gap, pair))
        scored.sort(key=lambda x: x[0])
    else:
        for task in tasks:
            i, j = rng.sample(range(len(task["responses"])), 2)
            pair = dict(task, responses=[task["responses"][i], task["responses"][j]],
                        meta=dict(task.get("meta", {}), selection={"mode": mode}))
            scored.append((rng.random(), pair))
        scored.sort(key=lambda x: x[0])
    keep = budget if budget > 0 else len(scored)
    return [pair for _, pair in scored[:keep]]


# --- one round ----------------------------------------------------------------------------------------------


def eval_figures(eval_dir: Path) -> dict[str, Any]:
    summary = json.loads((eval_dir / "summary.json").read_text())
    return summary


def run_round(args: LoopArguments, out: Path, round_no: int, policy: str, base: str, train: list[dict],
              heldout_file: Path, db, database_url: str, previous_reward: str | None) -> dict[str, Any] | None:
    rdir = out / f"round-{round_no}"
    rdir.mkdir(parents=True, exist_ok=True)
    prompts_file = rdir / "prompts.jsonl"
    if not prompts_file.is_file():
        write_jsonl(prompts_file, round_prompts(train, args.train_prompts, round_no, args.seed))
    log(f"round {round_no}: policy {policy}")

    gen = run_stage("generate", args.generate_config, {
        "model_name_or_path": policy, "prompts_file": str(prompts_file), "output_dir": str(rdir / "generate"),
        "k": args.k, "seed": args.seed + round_no})
    tasks = read_jsonl(gen / "tasks.jsonl")
    k = args.k
    if args.selection != "all":
        mode = args.selection if (args.selection == "random" or previous_reward) else "all"
        if mode == "all":
            log("select: no reward model yet in round 1, so every candidate goes to the annotators")
        else:
            tasks = select_pairs(tasks, mode, args.selection_budget, previous_reward, args.seed + round_no)
            k = 2
            log(f"select: {len(tasks)} pairs chosen ({mode})")

    project = f"{args.name}-round-{round_no}"
    pushed = push_tasks(db, project, tasks, k, args.overlap)
    log(f"push: project {project}: {pushed['created']} new task(s), {pushed['skipped']} already there")

    progress = labelling_progress(db, project)
    if progress["tasks_complete"] < progress["tasks"]:
        if args.annotators == "human":
            log(f"label: {progress['tasks_complete']} of {progress['tasks']} tasks are labelled.\n"
                f"  Serve the labeler:   labeler serve --db {database_url}\n"
                f"  Annotators work at:  {args.labeler_url}/projects/{project}/annotate\n"
                f"  Then run the same `rlhf loop` command again: it continues from here.")
            return None
        label_simulated(db, database_url, project, args, round_no)
        progress = labelling_progress(db, project)
    log(f"label: {progress}")

    labels = rdir / "labels"
    if not (labels / "export.json").is_file():
        from labeler.export import export_project

        export_project(db, project, labels, test_fraction=args.test_fraction)
    export_meta = json.loads((labels / "export.json").read_text())
    counts = export_meta.get("counts", {})
    log(f"export: labels {export_meta['content_hash'][:12]}: pairs {counts.get('pairs')}, sft rows {counts.get('sft')}")
    if not counts.get("pairs", {}).get("train") or not counts.get("sft", {}).get("train"):
        raise RlhfError(f"round {round_no}: the labels of project {project} gave no training pairs or SFT rows "
                        f"({counts}); every candidate tied: raise k, or use prompts whose answers differ")
    # Held-out pairs come from the labels' test split; a tiny run may have none, then the reward stage splits its own.
    heldout_pairs = str(labels / "preferences" / "test") if counts["pairs"].get("test") else None

    sft = run_stage("sft", args.sft_config, {
        "model_name_or_path": policy, "train_file": str(labels / "sft" / "train"), "output_dir": str(rdir / "sft")})
    reward = run_stage("reward", args.reward_config, {
        "model_name_or_path": str(sft), "train_file": str(labels / "preferences" / "train"),
        "eval_file": heldout_pairs, "output_dir": str(rdir / "reward")})
    final = sft
    if args.algorithm in ("dpo", "dpo+rl"):
        final = run_stage("dpo", args.dpo_config, {
            "model_name_or_path": str(sft), "train_file": str(labels / "preferences" / "train"),
            "output_dir": str(rdir / "dpo")})
    if args.algorithm in ("rl", "dpo+rl"):
        final = run_stage("rl", args.rl_config, {
            "model_name_or_path": str(final), "reward_model_path": str(reward), "prompts_file": str(prompts_file),
            "output_dir": str(rdir / "rl")})

    evaluation = run_stage("eval", args.eval_config, {
        "policies": [base, str(sft), str(final)], "policy_names": ["base", "sft", "final"], "reference": "base",
        "reward_model_path": str(reward), "prompts_file": str(heldout_file), "output_dir": str(rdir / "eval")})
    export_dir = out / "export" if round_no == args.rounds else rdir / "export"
    run_stage("export", args.export_config, {
        "model_name_or_path": str(final), "output_dir": str(export_dir), "eval_dir": str(evaluation)})

    figures = eval_figures(evaluation)
    reward_summary = json.loads((reward / "summary.json").read_text())
    return {
        "round": round_no,
        "policy": policy,
        "project": project,
        "labels_export": {"id": export_meta.get("id"), "content_hash": export_meta.get("content_hash"),
                          "counts": export_meta.get("counts"), "path": str(labels)},
        "stages": {s: str(rdir / s) for s in STAGE_KEYS if (rdir / s).is_dir()},
        "export": str(export_dir),
        "reward_accuracy": reward_summary["heldout_accuracy"],
        "reward_accuracy_by_source": reward_summary.get("heldout_accuracy_by_source"),
        "eval": figures,
    }


def pass_rates(eval_summary: dict[str, Any]) -> dict[str, float | None]:
    policies = eval_summary.get("policies", {})
    return {name: (policies.get(name) or {}).get("pass_rate_prompt") for name in ("base", "sft", "final")}


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args, resolved_config
    from rlhf.models import resolve_model_path
    from rlhf.prompt_set import load_prompt_set

    args, config_path = parse_stage_args("loop", (LoopArguments,), argv, description=__doc__)
    if args.rounds < 1:
        raise RlhfError("rounds must be at least 1")
    for stage in STAGE_KEYS:
        path = getattr(args, f"{stage}_config")
        if path and not Path(path).is_file():
            raise RlhfError(f"{stage}_config: config file not found: {path}")
    base = resolve_model_path(args.model_name_or_path)
    train = load_prompt_set("train", path=args.prompts_file)
    heldout = load_prompt_set("heldout", path=args.prompts_file)
    if not train or not heldout:
        raise RlhfError(f"{args.prompts_file or 'the bundled prompt set'}: needs rows with split 'train' and 'heldout'")
    if args.heldout_prompts:
        heldout = heldout[: args.heldout_prompts]

    out = Path(args.output_dir or f"runs/{args.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop.yaml").write_text(json.dumps(resolved_config(args), indent=2))
    heldout_file = out / "heldout.jsonl"
    write_jsonl(heldout_file, heldout)
    database_url = args.database or f"sqlite:///{(out / 'labels.db').resolve()}"
    db = open_labeler(database_url)

    started = time.time()
    state_file = out / "loop.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"rounds": [], "seconds": 0.0}
    done = {r["round"]: r for r in state["rounds"]}
    policy = base
    for round_no in range(1, args.rounds + 1):
        if round_no in done:
            policy = done[round_no]["export"]
            continue
        result = run_round(args, out, round_no, policy, base, train, heldout_file, db, database_url,
                           previous_reward=(done.get(round_no - 1) or {}).get("stages", {}).get("reward"))
        if result is None:  # waiting for human labels
            state["seconds"] += time.time() - started
            state_file.write_text(json.dumps(state, indent=2))
            return 0
        done[round_no] = result
        state["rounds"] = [done[r] for r in sorted(done)]
        state["seconds"] += time.time() - started
        started = time.time()
        state_file.write_text(json.dumps(state, indent=2))
        policy = result["export"]

    last = state["rounds"][-1]
    summary = {
        "heldout_pass_rate": pass_rates(last["eval"]),
        "reward_accuracy": last["reward_accuracy"],
        "reward_accuracy_by_source": last.get("reward_accuracy_by_source"),
        "seconds": round(state["seconds"], 1),
        "rounds": state["rounds"],
        "export": last["export"],
        "labels_database": database_url,
    }
    from rlhf.runs import write_summary

    write_summary(out, summary)
    try:
        from rlhf.report import build_report

        report = build_report(out)
    except ImportError:
        report = None
    print_table(summary, report)
    return 0


def print_table(summary: dict[str, Any], report) -> None:
    rates = summary["heldout_pass_rate"]
    policies = summary["rounds"][-1]["eval"].get("policies", {})
    print()
    print(f"{'policy':<8} {'pass (prompt)':>14} {'pass (instr.)':>14} {'win vs base':>12} {'KL to base':>11} {'length':>7}")
    for name in ("base", "sft", "final"):
        p = policies.get(name, {})

        def fmt(key, spec=".3f"):
            v = p.get(key)
            return format(v, spec) if isinstance(v, (int, float)) else "-"

        print(f"{name:<8} {fmt('pass_rate_prompt'):>14} {fmt('pass_rate_instruction'):>14} {fmt('win_rate'):>12} "
              f"{fmt('kl_to_reference'):>11} {fmt('mean_length', '.1f'):>7}")
    acc = summary["reward_accuracy"]
    from rlhf.reward import describe_by_source

    by_source = describe_by_source(summary.get("reward_accuracy_by_source"))
    print(f"\nreward model held-out pair accuracy: {acc:.3f}{by_source}" if isinstance(acc, (int, float)) else "")
    if all(isinstance(rates.get(k), (int, float)) for k in ("base", "final")):
        print(f"held-out prompt-level pass rate: base {rates['base']:.3f} -> final {rates['final']:.3f} "
              f"({100 * (rates['final'] - rates['base']):+.1f} points)")
    print(f"seconds: {summary['seconds']:.0f}   export: {summary['export']}   report: {report or '-'}")
