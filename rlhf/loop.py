"""The closed loop: the policy writes candidates, annotators rank them, the rankings train a better policy.

    rlhf loop --config quickstart                           # what `make quickstart` runs (rlhf/recipes/quickstart.yaml)
    rlhf loop --config quickstart --rounds 2                # the round-1 policy generates round 2
    rlhf loop --prompts_file my_prompts.jsonl --model_name_or_path my-model/ --annotators human
    rlhf loop --prompts_file my_prompts.jsonl --model_name_or_path my-model/ --annotators human --status

Your own prompts: JSONL, Parquet or a saved `datasets` folder whose rows have `prompt` (a string, or chat
messages, a system turn allowed); `id`, `split` (train/heldout) and `constraints` are optional. Without
`split`, a stable hash of the prompt text holds out `heldout_fraction` of them. Duplicates are dropped and
counted. A bad row stops the run with its file and line before anything is written. Without a config
file every stage runs on its defaults (`rlhf <stage> --help` lists them); `--<stage>_config FILE` overrides.

Each round r writes <output_dir>/round-<r>/:
  prompts.jsonl  this round's train prompts (a seeded rotation through the train split)
  generate/      K candidates per prompt from the current policy (round 1: the base model)
  (labeler)      tasks pushed to project <name>-round-<r> in the labeler database, then labelled:
                 annotators: simulated  - simulated accounts label through the labeler's HTTP API, ranking
                                          by the prompts' constraints (simulated_edits: they also fix the
                                          best candidate by hand where they can, rlhf/edits.py)
                 annotators: human      - the loop pushes the tasks, prints how to serve the labeler and
                                          where annotators go, and exits 0; `--status` shows progress, and
                                          the same command again continues once the labels are in
  labels/        the project's labels (`labeler export`): preference pairs, SFT rows, raw annotations, hash
  sft/ reward/ dpo/ [rl/]   the stages, each from its config, chained here
  eval/          base (and the previous round's policy) vs SFT vs final on the held-out prompts: pass rates
                 where prompts carry constraints, reward-model win rate, KL, length; 95% bootstrap intervals
  (arena)        blind A/B tasks, final vs base and final vs previous, in project <name>-arena-round-<r>:
                 people (or the simulated annotators) vote A, B, tie or both bad; win rates and
                 Bradley-Terry scores with 95% intervals go to summary.json, report.html and the dashboard
  export/        the round's policy as a Hugging Face folder (the last round's is copied to <output_dir>/export)
<output_dir>/summary.json and report.html hold the figures of the last round. A step whose output is
complete is skipped on a re-run, and a training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError

STAGE_KEYS = ("generate", "sft", "reward", "dpo", "rl", "onpolicy", "eval", "export")


@dataclass
class LoopArguments:
    name: str = field(default="loop", metadata={"help": "Run name: labeler projects are <name>-round-<r>; default folder runs/<name>."})
    output_dir: str | None = field(default=None, metadata={"help": "Run folder; default runs/<name>."})
    model_name_or_path: str = field(
        default="smollm2-135m-instruct", metadata={"help": "The base policy: a local model folder, or the embedded "
                                                           "smollm2-135m-instruct (default)."}
    )
    rounds: int = field(default=1, metadata={"help": "Rounds of generate -> label -> train; round r+1 samples from round r's policy."})
    prompts_file: str | None = field(
        default=None, metadata={"help": "Your prompts: JSONL, Parquet or a datasets folder with a `prompt` column "
                                        "(`id`, `split`, `constraints` optional); default: the bundled "
                                        "instruction-following set."}
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "Rows without `split`: this share is held out for eval and the arena, drawn "
                                       "from a hash of the prompt text (the same prompts on every run)."}
    )
    train_prompts: int = field(default=160, metadata={"help": "Train prompts per round (rotating through the train split); 0 = all."})
    heldout_prompts: int = field(default=0, metadata={"help": "Held-out prompts for eval and the arena; 0 = all of them."})
    k: int = field(default=4, metadata={"help": "Candidates per prompt (the labeler project's K)."})
    annotators: str = field(
        default="simulated", metadata={"help": "simulated: accounts label through the labeler's API by the prompts' "
                                               "constraints; human: push the tasks, print where people label, exit.",
                                       "choices": ["simulated", "human"]}
    )
    min_labelled_tasks: int = field(
        default=0, metadata={"help": "annotators human: continue once this many tasks reached the overlap "
                                     "(0 = every task of the round)."}
    )
    status: bool = field(
        default=False, metadata={"help": "Print each round's labelling progress (per annotator), the arena's votes "
                                         "and the stages done, then exit; changes nothing."}
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
        default="dpo", metadata={"help": "Policy optimisation after SFT: dpo (on the people's pairs), rl (GRPO/RLOO on the "
                                         "reward model), dpo+rl, or onpolicy_dpo (DPO on fresh policy samples that the "
                                         "reward model pairs: `rlhf onpolicy`).",
                                 "choices": ["dpo", "rl", "dpo+rl", "onpolicy_dpo"]}
    )
    arena: bool = field(
        default=True, metadata={"help": "After each round, push blind A/B tasks (final vs base, final vs the previous "
                                        "round's policy) on the held-out prompts to project <name>-arena-round-<r>."}
    )
    database: str | None = field(default=None, metadata={"help": "Labeler database URL; default sqlite:///<run folder>/labels.db."})
    labeler_url: str = field(default="http://127.0.0.1:5000", metadata={"help": "Where people reach the labeler (annotators: human)."})
    generate_config: str | None = field(default=None, metadata={"help": "Stage config for generate (YAML); default: the stage's defaults."})
    sft_config: str | None = field(default=None, metadata={"help": "Stage config for sft (YAML); default: the stage's defaults."})
    reward_config: str | None = field(default=None, metadata={"help": "Stage config for reward (YAML); default: the stage's defaults."})
    dpo_config: str | None = field(default=None, metadata={"help": "Stage config for dpo (YAML); default: the stage's defaults."})
    rl_config: str | None = field(default=None, metadata={"help": "Stage config for rl (YAML); default: the stage's defaults."})
    onpolicy_config: str | None = field(default=None, metadata={"help": "Stage config for onpolicy (YAML); default: the stage's defaults."})
    eval_config: str | None = field(default=None, metadata={"help": "Stage config for eval (YAML); default: the stage's defaults."})
    export_config: str | None = field(default=None, metadata={"help": "Stage config for export (YAML); default: the stage's defaults."})
    seed: int = field(default=0, metadata={"help": "Seed for prompt rotation, sampling and simulated annotators."})
    stage_processes: bool = field(
        default=True, metadata={"help": "Run each stage in its own Python process, so its memory goes back to the "
                                        "system when it ends (the run's peak is its largest stage's); false runs "
                                        "them inside the loop's process (a few seconds faster a stage, ~2 GB more)."}
    )


def log(message: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_stage(stage: str, config: str | None, overrides: dict[str, Any], own_process: bool = True) -> Path:
    """Run one stage through its own `main` (the same path as the CLI); skip it when already complete.

    With `own_process` (the loop's `stage_processes`, the default) the stage is `python -m rlhf.cli <stage>`
    in a child process: its memory goes back to the kernel when it exits, so the run's peak is its largest
    stage's, not the sum of what every stage leaves behind. The stage's seconds and peak resident memory go to
    <output_dir>/resources.json (rlhf.resources), measured inside the process that ran it.
    """
    import importlib
    import os
    import subprocess
    import sys

    from rlhf.resources import (RESOURCES_ENV, RECENT_RUNS, expected_seconds, format_seconds, measure,
                                remember_seconds, usable_cpus, write_resources)

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
    cpus = usable_cpus()  # a run on one core says nothing of the next run on two
    key = (f"{stage}:{Path(config).parent.name}/{Path(config).stem}" if config else f"{stage}:defaults") + f"@{cpus}cpu"
    expected = expected_seconds(key)
    if expected:
        log(f"{stage}: expected to take about {format_seconds(expected)} (the median of its last runs, up to "
            f"{RECENT_RUNS}, on this machine with {cpus} CPU{'s' if cpus > 1 else ''})")
    resources = out / "resources.json"
    if own_process:
        resources.unlink(missing_ok=True)
        env = {**os.environ, RESOURCES_ENV: str(resources.resolve())}
        code = subprocess.run([sys.executable, "-m", "rlhf.cli", stage, *argv], env=env).returncode
        if code == 130:
            raise KeyboardInterrupt
        if code:
            raise RlhfError(f"stage {stage} failed with exit code {code} ({out}); its own message is above")
        record = json.loads(resources.read_text())
    else:
        record = {"stage": stage, "pid": os.getpid()}
        with measure(record):
            code = importlib.import_module(f"rlhf.{stage}").main(argv)
        if code:
            raise RlhfError(f"stage {stage} failed with exit code {code} ({out})")
        write_resources(resources, record)
    remember_seconds(key, record["seconds"])
    log(f"{stage}: finished in {format_seconds(record['seconds'])}, peak memory {record['peak_rss_gb']} GiB")
    return out


def stage_resources(rdir: Path) -> dict[str, dict[str, Any]]:
    """Each stage's resources.json in a round folder: where the round's time and memory went."""
    found = {}
    for stage in STAGE_KEYS:
        path = rdir / stage / "resources.json"
        if path.is_file():
            found[stage] = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("stage", "pid")}
    return found


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def label_project(args: LoopArguments, round_no: int) -> str:
    return f"{args.name}-round-{round_no}"


def arena_project(args: LoopArguments, round_no: int) -> str:
    return f"{args.name}-arena-round-{round_no}"


# --- the steps of a round -----------------------------------------------------------------------------------


def labels_ready(progress: dict[str, Any], args: LoopArguments) -> bool:
    needed = args.min_labelled_tasks or progress["tasks"]
    return progress["tasks_complete"] >= min(needed, progress["tasks"])


def ask_people(args: LoopArguments, project: str, progress: dict[str, Any], database_url: str, what: str) -> None:
    needed = args.min_labelled_tasks or progress["tasks"]
    log(f"{what}: {progress['tasks_complete']} of {progress['tasks']} tasks labelled in project {project} "
        f"({needed} needed to continue).\n"
        f"  1. Serve the labeler:       labeler serve --db {database_url}\n"
        f"  2. Add annotators (once):   labeler users add NAME --db {database_url}\n"
        f"  3. Annotators label at:     {args.labeler_url}/projects/{project}/annotate\n"
        f"  Progress:                   the same `rlhf loop` command with --status\n"
        f"  Then run the same `rlhf loop` command again: it continues from here.")


def arena_step(args: LoopArguments, round_no: int, evaluation: Path, db, database_url: str) -> str:
    """Blind A/B tasks from the eval's held-out responses: final vs base, and final vs the previous policy."""
    from rlhf.arena import push_arena

    by_policy: dict[str, list[dict]] = {}
    for rec in read_jsonl(evaluation / "responses.jsonl"):
        by_policy.setdefault(rec["policy"], []).append(rec)
    pairs = [("final", "base")] + ([("final", "previous")] if "previous" in by_policy else [])
    final = by_policy["final"]
    project = arena_project(args, round_no)
    push_arena(db, database_url, project, [r["prompt"] for r in final],
               {name: [r["response"] for r in recs] for name, recs in by_policy.items()}, pairs,
               [r["meta"] for r in final], args.overlap,
               simulated=args.simulated_annotators if args.annotators == "simulated" else 0,
               error_rate=args.error_rate, seed=args.seed + 1000 + round_no, log=log)
    if args.annotators == "human":
        log(f"arena: annotators vote at {args.labeler_url}/projects/{project}/annotate "
            f"(the report and summary.json pick up the votes on the next `rlhf loop` run)")
    return project


def run_round(args: LoopArguments, out: Path, round_no: int, policy: str, base: str, train: list[dict],
              heldout_file: Path, db, database_url: str, previous_reward: str | None,
              train_from: str | None = None) -> dict[str, Any] | None:
    """One round as its list of steps; None while the round waits for people's labels.

    `policy` (the previous round's export, a full model) writes the candidates; SFT trains from `train_from`,
    the previous round's final adapter, so every adapter of the run folds onto the base model outside the run
    folder and the run stays loadable wherever it is copied.
    """
    from rlhf.label import label_simulated, labelling_progress, push_tasks, write_labels
    from rlhf.prompts import rotate_prompts
    from rlhf.selection import select_pairs

    rdir = out / f"round-{round_no}"
    rdir.mkdir(parents=True, exist_ok=True)
    prompts_file = rdir / "prompts.jsonl"
    if not prompts_file.is_file():
        write_jsonl(prompts_file, rotate_prompts(train, args.train_prompts, round_no, args.seed))
    log(f"round {round_no}: policy {policy}")

    # 1. generate: K candidates per train prompt from the current policy
    gen = run_stage("generate", args.generate_config, own_process=args.stage_processes, overrides={
        "model_name_or_path": policy, "prompts_file": str(prompts_file), "output_dir": str(rdir / "generate"),
        "k": args.k, "seed": args.seed + round_no})
    tasks, k = read_jsonl(gen / "tasks.jsonl"), args.k
    # 2. select (optional): only the pairs the previous reward model is least sure of
    if args.selection != "all":
        if args.selection == "uncertain" and not previous_reward:
            log("select: no reward model yet in round 1, so every candidate goes to the annotators")
        else:
            tasks, k = select_pairs(tasks, args.selection, args.selection_budget, previous_reward, args.seed + round_no), 2
            log(f"select: {len(tasks)} pairs chosen ({args.selection})")

    # 3. push to the labeler, 4. label (simulated accounts, or wait for people)
    project = label_project(args, round_no)
    pushed = push_tasks(db, project, tasks, k, args.overlap)
    log(f"push: project {project}: {pushed['created']} new task(s), {pushed['skipped']} already there")
    progress = labelling_progress(db, project)
    if not labels_ready(progress, args):
        if args.annotators == "human":
            ask_people(args, project, progress, database_url, "label")
            return None
        label_simulated(db, database_url, project, args.simulated_annotators, args.error_rate,
                        seed=args.seed + round_no, edit=args.simulated_edits, log=log)
        progress = labelling_progress(db, project)
    log(f"label: {progress['tasks_complete']} of {progress['tasks']} tasks complete; {progress['by_annotator']}")

    # 5. the labels: preference pairs and SFT rows, with their content hash
    labels = rdir / "labels"
    labels_meta = write_labels(db, project, labels, args.test_fraction)
    counts = labels_meta.get("counts", {})
    log(f"labels: {labels_meta['content_hash'][:12]}: pairs {counts.get('pairs')}, sft rows {counts.get('sft')}")
    if not counts.get("pairs", {}).get("train") or not counts.get("sft", {}).get("train"):
        raise RlhfError(f"round {round_no}: the labels of project {project} gave no training pairs or SFT rows "
                        f"({counts}); every candidate tied: raise k, or use prompts whose answers differ")
    # Held-out pairs come from the labels' test split; a tiny run may have none, then the reward stage splits its own.
    heldout_pairs = str(labels / "preferences" / "test") if counts["pairs"].get("test") else None

    # 6. sft, 7. reward, 8. policy optimisation
    sft = run_stage("sft", args.sft_config, own_process=args.stage_processes, overrides={
        "model_name_or_path": train_from or policy, "train_file": str(labels / "sft" / "train"), "output_dir": str(rdir / "sft")})
    reward = run_stage("reward", args.reward_config, own_process=args.stage_processes, overrides={
        "model_name_or_path": str(sft), "train_file": str(labels / "preferences" / "train"),
        "eval_file": heldout_pairs, "output_dir": str(rdir / "reward")})
    final = sft
    if args.algorithm in ("dpo", "dpo+rl"):
        final = run_stage("dpo", args.dpo_config, own_process=args.stage_processes, overrides={
            "model_name_or_path": str(sft), "train_file": str(labels / "preferences" / "train"),
            "output_dir": str(rdir / "dpo")})
    if args.algorithm in ("rl", "dpo+rl"):
        final = run_stage("rl", args.rl_config, own_process=args.stage_processes, overrides={
            "model_name_or_path": str(final), "reward_model_path": str(reward), "prompts_file": str(prompts_file),
            "output_dir": str(rdir / "rl")})
    if args.algorithm == "onpolicy_dpo":
        # Every train prompt, not only the round's labelled ones: the reward model labels the fresh samples.
        onpolicy_prompts = rdir / "onpolicy_prompts.jsonl"
        if not onpolicy_prompts.is_file():
            write_jsonl(onpolicy_prompts, train)
        final = run_stage("onpolicy", args.onpolicy_config, own_process=args.stage_processes, overrides={
            "model_name_or_path": str(sft), "reward_model_path": str(reward), "prompts_file": str(onpolicy_prompts),
            "eval_prompts_file": str(heldout_file),  # the reward-hacking guard: each iteration on held-out prompts
            "output_dir": str(rdir / "onpolicy"), "seed": args.seed + round_no})

    # 9. eval on the held-out prompts, 10. the blind arena, 11. export
    policies, names = [base, str(sft), str(final)], ["base", "sft", "final"]
    if policy != base:
        policies.insert(1, policy)
        names.insert(1, "previous")
    evaluation = run_stage("eval", args.eval_config, own_process=args.stage_processes, overrides={
        "policies": policies, "policy_names": names, "reference": "base",
        "reward_model_path": str(reward), "prompts_file": str(heldout_file), "output_dir": str(rdir / "eval")})
    arena = arena_step(args, round_no, evaluation, db, database_url) if args.arena else None
    export_dir = run_stage("export", args.export_config, own_process=args.stage_processes, overrides={
        "model_name_or_path": str(final), "output_dir": str(rdir / "export"), "eval_dir": str(evaluation),
        "reward_model_path": str(reward)})

    reward_summary = json.loads((reward / "summary.json").read_text())
    return {
        "round": round_no,
        "policy": policy,
        "project": project,
        "arena_project": arena,
        "labels": {"id": labels_meta.get("id"), "content_hash": labels_meta.get("content_hash"),
                   "counts": labels_meta.get("counts"), "path": str(labels)},
        "stages": {s: str(rdir / s) for s in STAGE_KEYS if (rdir / s).is_dir()},
        "resources": stage_resources(rdir),
        "export": str(export_dir),
        "final": str(final),
        "reward_accuracy": reward_summary["heldout_accuracy"],
        "reward_accuracy_ci": reward_summary.get("heldout_accuracy_ci"),
        "reward_accuracy_by_source": reward_summary.get("heldout_accuracy_by_source"),
        "eval": json.loads((evaluation / "summary.json").read_text()),
    }


# --- the run ------------------------------------------------------------------------------------------------


def pass_rates(eval_summary: dict[str, Any], key: str = "pass_rate_prompt") -> dict[str, Any]:
    policies = eval_summary.get("policies", {})
    return {name: (policies.get(name) or {}).get(key) for name in ("base", "sft", "final")}


def check_args(args: LoopArguments) -> None:
    if args.rounds < 1:
        raise RlhfError("rounds must be at least 1")
    if args.k < 2:
        raise RlhfError(f"k must be at least 2 (candidates to compare), got {args.k}")
    if args.min_labelled_tasks < 0:
        raise RlhfError(f"min_labelled_tasks must be 0 (every task) or more, got {args.min_labelled_tasks}")
    for stage in STAGE_KEYS:
        path = getattr(args, f"{stage}_config")
        if path and not Path(path).is_file():
            raise RlhfError(f"{stage}_config: config file not found: {path}")


def publish_export(round_export: Path, target: Path) -> None:
    """Copy the last round's export to <output_dir>/export (whole, or not at all)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(round_export, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args, resolved_config
    from rlhf.models import resolve_model_path
    from rlhf.prompts import load_loop_prompts

    args, config_path = parse_stage_args("loop", (LoopArguments,), argv, description=__doc__)
    out = Path(args.output_dir or f"runs/{args.name}")
    if args.status:
        return print_status(args, out)
    # Everything is checked before the run folder is made: a bad row leaves nothing behind.
    check_args(args)
    prompts = load_loop_prompts(args.prompts_file, args.heldout_fraction)
    if args.annotators == "simulated" and not prompts.constrained:
        raise RlhfError(f"{prompts.source}: annotators 'simulated' rank by each prompt's `constraints`, and some rows "
                        f"have none: use --annotators human (people in the browser), or prompts with constraints")
    base = resolve_model_path(args.model_name_or_path)
    heldout = prompts.heldout[: args.heldout_prompts] if args.heldout_prompts else prompts.heldout
    log(f"prompts: {prompts.source}: {len(prompts.train)} train, {len(prompts.heldout)} held out"
        f"{f' ({prompts.hashed_split} split by hash)' if prompts.hashed_split else ''}"
        f"{f', {prompts.duplicates} duplicate(s) dropped' if prompts.duplicates else ''}")

    from rlhf.label import open_labeler

    out.mkdir(parents=True, exist_ok=True)
    (out / "loop.yaml").write_text(json.dumps(resolved_config(args), indent=2))
    (out / "prompts.json").write_text(json.dumps(prompts.describe(), indent=2))
    heldout_file = out / "heldout.jsonl"
    write_jsonl(heldout_file, heldout)
    database_url = args.database or f"sqlite:///{(out / 'labels.db').resolve()}"
    db = open_labeler(database_url)

    started = time.time()
    state_file = out / "loop.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"rounds": [], "seconds": 0.0}
    state["database"] = database_url
    done = {r["round"]: r for r in state["rounds"]}
    policy, train_from = base, None
    for round_no in range(1, args.rounds + 1):
        if round_no in done:
            policy, train_from = done[round_no]["export"], done[round_no].get("final")
            continue
        result = run_round(args, out, round_no, policy, base, prompts.train, heldout_file, db, database_url,
                           previous_reward=(done.get(round_no - 1) or {}).get("stages", {}).get("reward"),
                           train_from=train_from)
        state["seconds"] += time.time() - started
        started = time.time()
        if result is None:  # waiting for people's labels
            state_file.write_text(json.dumps(state, indent=2))
            return 0
        done[round_no] = result
        state["rounds"] = [done[r] for r in sorted(done)]
        state_file.write_text(json.dumps(state, indent=2))
        policy, train_from = result["export"], result["final"]

    last = state["rounds"][-1]
    if Path(last["export"]).resolve() != (out / "export").resolve():
        publish_export(Path(last["export"]), out / "export")
    summary = run_summary(state, db, database_url, prompts.describe(), out)
    from rlhf.report import build_report
    from rlhf.runs import write_summary

    write_summary(out, summary)
    report = build_report(out)
    print_table(summary, report)
    return 0


def run_summary(state: dict[str, Any], db, database_url: str, prompts: dict[str, Any], out: Path) -> dict[str, Any]:
    """summary.json of the run: the last round's figures, each with its 95% interval, and the arena's votes so far."""
    from rlhf.label import arena_summary

    last = state["rounds"][-1]
    summary = {
        "heldout_pass_rate": pass_rates(last["eval"]),
        "heldout_pass_rate_ci": pass_rates(last["eval"], "pass_rate_prompt_ci"),
        "reward_accuracy": last["reward_accuracy"],
        "reward_accuracy_ci": last.get("reward_accuracy_ci"),
        "reward_accuracy_by_source": last.get("reward_accuracy_by_source"),
        "seconds": round(state["seconds"], 1),
        # where the time and memory went: each stage of the last round, and the run's largest stage peak
        "stage_seconds": {stage: r.get("seconds") for stage, r in last.get("resources", {}).items()},
        "stage_peak_rss_gb": {stage: r.get("peak_rss_gb") for stage, r in last.get("resources", {}).items()},
        "peak_rss_gb": max((r.get("peak_rss_gb") or 0 for rnd in state["rounds"]
                            for r in rnd.get("resources", {}).values()), default=None) or None,
        "prompts": prompts,
        "rounds": state["rounds"],
        "export": str(out / "export"),
        "labels_database": database_url,
    }
    if last.get("arena_project"):
        arena = arena_summary(db, last["arena_project"]) or {"votes": 0, "pairs": {}, "bradley_terry": {}}
        summary["arena"] = {"project": last["arena_project"], "votes": arena["votes"], **arena["pairs"],
                            "bradley_terry": arena["bradley_terry"], "method": arena.get("method")}
    return summary


def print_status(args: LoopArguments, out: Path) -> int:
    """Per round: the label project's progress and each annotator's count, the arena's votes, the stages done."""
    from labeler.db import Database

    from rlhf.label import arena_summary, labelling_progress

    state_file = out / "loop.json"
    if not state_file.is_file():
        raise RlhfError(f"{out}: no loop run here yet (no loop.json): start it without --status")
    state = json.loads(state_file.read_text())
    database_url = args.database or state.get("database") or f"sqlite:///{(out / 'labels.db').resolve()}"
    db = Database(database_url)
    print(f"run {out}  (labels: {database_url})")
    try:
        for round_no in range(1, args.rounds + 1):
            rdir = out / f"round-{round_no}"
            progress = labelling_progress(db, label_project(args, round_no))
            if progress is None and not rdir.is_dir():
                print(f"round {round_no}: not started")
                continue
            stages = [s for s in STAGE_KEYS if (rdir / s / "summary.json").is_file()]
            print(f"round {round_no}: stages done: {', '.join(stages) or 'none'}")
            if progress is not None:
                needed = args.min_labelled_tasks or progress["tasks"]
                print(f"  labels  {label_project(args, round_no)}: {progress['tasks_complete']} of {progress['tasks']} "
                      f"tasks labelled ({needed} needed to continue); annotations {progress['annotations']} of "
                      f"{progress['annotations_needed']}; leases in flight {progress['leases_in_flight']}")
                for user, n in progress["by_annotator"].items():
                    print(f"    {user:<24} {n:>5}")
            arena = labelling_progress(db, arena_project(args, round_no))
            if arena is not None:
                print(f"  arena   {arena_project(args, round_no)}: {arena['tasks_complete']} of {arena['tasks']} tasks voted")
                for key, pair in (arena_summary(db, arena_project(args, round_no)) or {}).get("pairs", {}).items():
                    print(f"    {key:<24} win rate {pair['win_rate']:.3f} [{pair['win_rate_ci'][0]:.3f}, "
                          f"{pair['win_rate_ci'][1]:.3f}] ({pair['votes']} votes)")
    finally:
        db.dispose()
    return 0


def fmt_ci(value: Any, ci: Any, spec: str = ".3f") -> str:
    from rlhf.reward import format_ci

    return f"{value:{spec}}{format_ci(ci)}" if isinstance(value, (int, float)) else "-"


def print_table(summary: dict[str, Any], report) -> None:
    from rlhf.reward import describe_by_source, format_ci

    policies = summary["rounds"][-1]["eval"].get("policies", {})
    print()
    print(f"{'policy':<9} {'pass (prompt) [95% CI]':>24} {'pass (instr.)':>14} {'win vs base [95% CI]':>24} "
          f"{'KL to base':>11} {'length':>7}")
    for name in [n for n in ("base", "previous", "sft", "final") if n in policies]:
        p = policies[name]
        kl = p.get("kl_to_reference")
        print(f"{name:<9} {fmt_ci(p.get('pass_rate_prompt'), p.get('pass_rate_prompt_ci')):>24} "
              f"{fmt_ci(p.get('pass_rate_instruction'), None):>14} {fmt_ci(p.get('win_rate'), p.get('win_rate_ci')):>24} "
              f"{fmt_ci(kl, None):>11} {fmt_ci(p.get('mean_length'), None, '.1f'):>7}")
    print(f"({summary['rounds'][-1]['eval'].get('prompts')} held-out prompts; win rate: the reward model's judgement)")
    cached = summary["rounds"][-1]["eval"].get("cached_policies")
    if cached:
        print(f"answers from eval's cache (an earlier eval of the same model, prompts and settings): {', '.join(cached)}")
    acc = summary["reward_accuracy"]
    if isinstance(acc, (int, float)):
        print(f"\nreward model held-out pair accuracy: {acc:.3f}{format_ci(summary.get('reward_accuracy_ci'))}"
              f"{describe_by_source(summary.get('reward_accuracy_by_source'))}")
    final = policies.get("final", {})
    if isinstance(final.get("pass_rate_prompt_delta"), (int, float)):
        print(f"held-out prompt-level pass rate: base {policies['base']['pass_rate_prompt']:.3f} -> final "
              f"{final['pass_rate_prompt']:.3f} ({100 * final['pass_rate_prompt_delta']:+.1f} points, paired 95% CI "
              f"[{100 * final['pass_rate_prompt_delta_ci'][0]:+.1f}, {100 * final['pass_rate_prompt_delta_ci'][1]:+.1f}])")
    arena = summary.get("arena")
    if arena:
        for key, pair in arena.items():
            if isinstance(pair, dict) and "win_rate" in pair:
                print(f"arena {key}: win rate {fmt_ci(pair['win_rate'], pair['win_rate_ci'])} over {pair['votes']} "
                      f"votes ({pair['wins']} wins, {pair['losses']} losses, {pair['ties']} ties, "
                      f"{pair['both_bad']} both bad)")
        if not arena["votes"]:
            print(f"arena: no votes yet in project {arena['project']}")
    if summary.get("stage_seconds"):
        from rlhf.resources import format_seconds

        print("time (peak memory) by stage: " + ", ".join(
            f"{stage} {format_seconds(sec)} ({summary['stage_peak_rss_gb'].get(stage)} GiB)"
            for stage, sec in summary["stage_seconds"].items() if sec is not None))
    print(f"seconds: {summary['seconds']:.0f}   export: {summary['export']}   report: {report or '-'}")
