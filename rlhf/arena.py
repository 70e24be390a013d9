"""The blind arena between checkpoints: sample each policy on held-out prompts, push A/B tasks, read the votes.

    rlhf arena --policies runs/team/round-2/export runs/team/round-1/export base-model/ \\
               --policy_names new previous base --prompts_file heldout.jsonl \\
               --database sqlite:///runs/team/labels.db --project team-arena-2
    rlhf arena --database sqlite:///runs/team/labels.db --project team-arena-2 --results

The first policy is the one under test: it meets each of the others on every prompt (one task per prompt
and opponent). Each policy answers greedily (the same answer every time; set `temperature` for samples).
Annotators vote A, B, tie or both bad in the labeler (`labeler serve`, then /projects/<project>/annotate);
they never see the model names, and the sides are shuffled. `--results` prints each pair's win rate and a
Bradley-Terry score per policy with bootstrap 95% intervals over prompts, and writes them to
<output_dir>/arena.json. With `annotators: simulated` (prompts with `constraints` only), simulated accounts
vote through the labeler's API by the constraints met. `rlhf loop` runs the same steps after every round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError


@dataclass
class ArenaArguments:
    policies: list[str] = field(default_factory=list, metadata={"help": "Model or adapter folders; the first is the one under test."})
    policy_names: list[str] | None = field(default=None, metadata={"help": "Names stored with the votes (never shown to annotators); default: folder names."})
    prompts_file: str | None = field(default=None, metadata={"help": "Held-out prompts: JSONL/Parquet/datasets folder with `prompt`."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    database: str = field(default="sqlite:///labels.db", metadata={"help": "Labeler database URL."})
    project: str = field(default="arena", metadata={"help": "Arena project (created when missing, kind arena, K = 2)."})
    overlap: int = field(default=1, metadata={"help": "Votes per task (annotators per task)."})
    output_dir: str = field(default="runs/arena", metadata={"help": "Where responses.jsonl and arena.json go."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (default); above 0 samples."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=42, metadata={"help": "Sampling seed and the simulated annotators' seed."})
    annotators: str = field(default="human", metadata={"help": "human: push and exit; simulated: vote by the prompts' constraints.",
                                                      "choices": ["human", "simulated"]})
    error_rate: float = field(default=0.0, metadata={"help": "Simulated voters flip a judgment with this probability."})
    results: bool = field(default=False, metadata={"help": "Only read the project's votes: print and write the win rates."})
    labeler_url: str = field(default="http://127.0.0.1:5000", metadata={"help": "Where people reach the labeler."})


def push_arena(db, database_url: str, project: str, prompts: list, responses: dict[str, list[str]],
               pairs: list[tuple[str, str]], metas: list[dict], overlap: int, simulated: int = 0,
               error_rate: float = 0.0, seed: int = 0, log=print) -> dict:
    """Push one blind A/B task per prompt and pair; with `simulated` > 0 that many simulated accounts vote."""
    from labeler.arena import GUIDELINES, arena_tasks

    from rlhf.label import label_simulated, push_tasks

    tasks = arena_tasks(prompts, responses, pairs, metas=metas)
    pushed = push_tasks(db, project, tasks, k=2, overlap=overlap, kind="arena", guidelines=GUIDELINES, allow_edit=False)
    log(f"arena: project {project}: {pushed['created']} blind A/B task(s) ({', '.join(f'{a} vs {b}' for a, b in pairs)})")
    if simulated:
        label_simulated(db, database_url, project, simulated, error_rate, seed=seed, edit=False, log=log)
    return pushed


def describe_results(results: dict[str, Any]) -> list[str]:
    lines = []
    for key, p in results["pairs"].items():
        lo, hi = p["win_rate_ci"]
        lines.append(f"{key:<28} win rate {p['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]  {p['votes']} votes: {p['wins']} wins, "
                     f"{p['losses']} losses, {p['ties']} ties, {p['both_bad']} both bad")
    for name, s in sorted(results["bradley_terry"].items(), key=lambda kv: -kv[1]["score"]):
        lines.append(f"{name:<28} Bradley-Terry {s['score']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}]  ({s['votes']} votes)")
    return lines or ["no votes yet"]


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args
    from rlhf.label import arena_summary, open_labeler

    args, _ = parse_stage_args("arena", (ArenaArguments,), argv, description=__doc__)
    out = Path(args.output_dir)
    if args.results:
        from labeler.db import Database

        db = Database(args.database)
        results = arena_summary(db, args.project)
        db.dispose()
        if results is None:
            raise RlhfError(f"{args.database}: no project '{args.project}'")
        out.mkdir(parents=True, exist_ok=True)
        (out / "arena.json").write_text(json.dumps(results, indent=2))
        print("\n".join(describe_results(results)))
        return 0

    from rlhf.eval import policy_names
    from rlhf.models import resolve_model_path
    from rlhf.prompts import check_row

    if len(args.policies) < 2:
        raise RlhfError("policies: the arena needs at least two (the first is the one under test)")
    if not args.prompts_file:
        raise RlhfError("prompts_file is required (held-out prompts)")
    from rlhf.data import read_rows

    rows = []
    for where, row in read_rows(args.prompts_file):
        check_row(row, where)
        rows.append(row)
    rows = rows[: args.max_prompts]
    if args.annotators == "simulated" and not all(r.get("constraints") for r in rows):
        raise RlhfError(f"{args.prompts_file}: simulated voters judge by each prompt's `constraints`, and some rows have none")
    names = policy_names(args.policies, args.policy_names)
    if len(set(names)) != len(names):
        raise RlhfError(f"policy names must be unique, got {names}")
    paths = [resolve_model_path(p, field="policies") for p in args.policies]

    responses = sample_policies(list(zip(names, paths)), [r["prompt"] for r in rows], args)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "responses.jsonl", "w", encoding="utf-8") as fh:
        for name in names:
            for row, text in zip(rows, responses[name]):
                fh.write(json.dumps({"policy": name, "prompt": row["prompt"], "response": text}, ensure_ascii=False) + "\n")
    db = open_labeler(args.database)
    metas = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    push_arena(db, args.database, args.project, [r["prompt"] for r in rows], responses,
               [(names[0], other) for other in names[1:]], metas, args.overlap,
               simulated=1 if args.annotators == "simulated" else 0, error_rate=args.error_rate, seed=args.seed)
    results = arena_summary(db, args.project)
    (out / "arena.json").write_text(json.dumps(results, indent=2))
    if args.annotators == "human":
        print(f"[rlhf arena] annotators vote at {args.labeler_url}/projects/{args.project}/annotate "
              f"(labeler serve --db {args.database}); then: rlhf arena --database {args.database} "
              f"--project {args.project} --results")
    else:
        print("\n".join(describe_results(results)))
    return 0


def sample_policies(policies: list[tuple[str, str]], prompts: list, args: ArenaArguments) -> dict[str, list[str]]:
    """Each policy's answer to every prompt (the eval's sampler: chat template, left padding, KV cache)."""
    from rlhf.eval import sample_responses
    from rlhf.models import load_causal_lm, load_tokenizer

    responses = {}
    for name, path in policies:
        print(f"[rlhf arena] {name}: answering {len(prompts)} prompts", flush=True)
        model, tokenizer = load_causal_lm(path).eval(), load_tokenizer(path)
        samples = sample_responses(model, tokenizer, prompts, args.max_new_tokens, args.temperature, 1.0,
                                   args.batch_size, args.seed)
        responses[name] = [s["text"] for s in samples]
        del model
    return responses
