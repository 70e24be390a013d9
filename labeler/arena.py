"""The blind arena: A/B votes between checkpoints, their win rates and Bradley-Terry scores.

An arena project (Project.kind == "arena", K = 2) holds one task per prompt and pair of policies. The
policy names travel in each response's `model` field, which annotators never see (the page labels the
sides A and B, and the display order is shuffled per annotator and stored on the assignment). Each
task's meta says which side is the `policy` under test and which its `opponent`.

A vote is an annotation: the ranked-first response wins, a tie ranks both first, and "all bad" is a
both-bad vote (counted as a tie in win rates, and reported on its own).

    tasks = arena_tasks(prompts, {"final": [...], "base": [...]}, [("final", "base")])
    summary = arena_results(arena_votes(session, project))
    summary["pairs"]["final_vs_base"]["win_rate"], ...["win_rate_ci"], ...["votes"]
    summary["bradley_terry"]["final"]["score"], ...["ci"]

Intervals are bootstrap 95% intervals over prompts (all votes on one prompt resampled together).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from labeler.aggregate import bradley_terry
from labeler.models import Annotation, Project, Task, User
from labeler.stats import bootstrap_ci, quantile

GUIDELINES = ("Two answers to the same prompt, from two versions of a model. Pick the better one (**1** A, "
              "**2** B), **t** for a tie, or **b** when both are bad. Judge the answer, not its length.")
OUTCOMES = ("win", "loss", "tie", "both_bad")
BT_RESAMPLES = 500  # each resample refits the model: fewer than the plain bootstrap's 2000


def pair_key(policy: str, opponent: str) -> str:
    return f"{policy}_vs_{opponent}"


def arena_tasks(prompts: list, responses: dict[str, list[str]], pairs: list[tuple[str, str]],
                metas: list[dict] | None = None) -> list[dict]:
    """One task per prompt and (policy, opponent) pair, the two sides in an order drawn from the prompt's hash.

    `responses[name][i]` is policy `name`'s answer to `prompts[i]`; `metas[i]` is copied into task i's meta
    (constraints, ids) next to the arena's own {"policy", "opponent"}.
    """
    tasks = []
    metas = metas or [{}] * len(prompts)
    for a, b in pairs:
        for name in (a, b):
            if len(responses.get(name, [])) != len(prompts):
                raise ValueError(f"arena: policy {name!r} has {len(responses.get(name, []))} responses "
                                 f"for {len(prompts)} prompts")
        for i, prompt in enumerate(prompts):
            sides = [(a, responses[a][i]), (b, responses[b][i])]
            digest = hashlib.sha256(json.dumps([prompt, a, b], sort_keys=True).encode()).digest()
            if digest[0] % 2:
                sides.reverse()
            meta = dict(metas[i] or {})
            meta["arena"] = {"policy": a, "opponent": b}
            tasks.append({"prompt": prompt, "responses": [{"text": t, "model": n} for n, t in sides], "meta": meta})
    return tasks


def vote_outcome(ranking: dict, all_bad: bool, policy_rid: str, opponent_rid: str) -> str:
    """"win" / "loss" / "tie" / "both_bad" for the policy side of one vote."""
    if all_bad:
        return "both_bad"
    mine, theirs = ranking.get(policy_rid), ranking.get(opponent_rid)
    if mine is None or theirs is None or mine == theirs:
        return "tie"
    return "win" if mine < theirs else "loss"


def arena_votes(session: Session, project: Project) -> list[dict]:
    """Every vote of an arena project: {annotation_id, task_id, prompt_hash, user, policy, opponent, outcome}."""
    rows = session.execute(
        select(Annotation, Task, User.username).join(Task, Task.id == Annotation.task_id)
        .join(User, User.id == Annotation.user_id).where(Task.project_id == project.id).order_by(Annotation.id)
    ).all()
    votes = []
    for annotation, task, username in rows:
        side = (task.meta or {}).get("arena") or {}
        by_model = {r.model: str(r.id) for r in task.responses}
        policy, opponent = side.get("policy"), side.get("opponent")
        if policy not in by_model or opponent not in by_model:
            continue  # not an arena task (imported by hand without the meta): nothing to count
        ranking = {str(k): v for k, v in (annotation.ranking or {}).items()}
        votes.append({
            "annotation_id": annotation.id, "task_id": task.id, "prompt_hash": task.prompt.prompt_hash,
            "user": username, "policy": policy, "opponent": opponent,
            "outcome": vote_outcome(ranking, annotation.all_bad, by_model[policy], by_model[opponent]),
        })
    return votes


def win_points(votes: list[dict]) -> float:
    """Win rate of the policy side: a win is 1, a tie or both-bad is 1/2."""
    return sum(1.0 if v["outcome"] == "win" else 0.0 if v["outcome"] == "loss" else 0.5 for v in votes) / len(votes)


def by_prompt(votes: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for v in votes:
        groups[v["prompt_hash"]].append(v)
    return [groups[h] for h in sorted(groups)]


def bt_rankings(votes: list[dict]) -> list[dict]:
    """Each vote as a two-entry ranking over policy names (rank 1 the better; equal ranks a tie)."""
    ranks = {"win": (1, 2), "loss": (2, 1), "tie": (1, 1), "both_bad": (1, 1)}
    return [dict(zip((v["policy"], v["opponent"]), ranks[v["outcome"]])) for v in votes]


def arena_results(votes: list[dict], seed: int = 0) -> dict:
    """Win rate per (policy, opponent) pair and a Bradley-Terry score per policy, each with its 95% interval."""
    pairs: dict[str, dict] = {}
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for v in votes:
        grouped[(v["policy"], v["opponent"])].append(v)
    for (policy, opponent), vs in grouped.items():
        counts = {o: sum(v["outcome"] == o for v in vs) for o in OUTCOMES}
        groups = by_prompt(vs)
        pairs[pair_key(policy, opponent)] = {
            "policy": policy, "opponent": opponent,
            "wins": counts["win"], "losses": counts["loss"], "ties": counts["tie"], "both_bad": counts["both_bad"],
            "votes": len(vs), "prompts": len(groups),
            "win_rate": win_points(vs),
            "win_rate_ci": bootstrap_ci(groups, lambda gs: win_points([v for g in gs for v in g]), seed=seed),
        }
    scores: dict[str, dict] = {}
    if votes:
        fitted = bradley_terry(bt_rankings(votes))
        groups = by_prompt(votes)
        names = sorted(fitted)
        samples: dict[str, list[float]] = {n: [] for n in names}
        rng = random.Random(seed)
        for _ in range(BT_RESAMPLES if len(groups) > 1 else 0):
            sample = [v for _ in groups for v in groups[rng.randrange(len(groups))]]
            refit = bradley_terry(bt_rankings(sample))
            for n in names:
                if n in refit:
                    samples[n].append(refit[n])
        for n in names:
            s = sorted(samples[n])
            ci = [quantile(s, 0.025), quantile(s, 0.975)] if s else [fitted[n], fitted[n]]
            scores[n] = {"score": fitted[n], "ci": ci,
                         "votes": sum(n in (v["policy"], v["opponent"]) for v in votes)}
    return {"votes": len(votes), "pairs": pairs, "bradley_terry": scores,
            "method": "bootstrap 95% intervals over prompts; ties and both-bad count half a win"}
