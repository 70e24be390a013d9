"""Active selection: which candidate pairs go to the annotators when they cannot label everything.

    rlhf loop --selection uncertain --selection_budget 64   # the 64 pairs the reward model is least sure of

`uncertain` scores every candidate with the previous round's reward model and keeps, per prompt, the
pair with the smallest reward gap, then the `budget` smallest gaps overall; `random` draws a pair per
prompt and keeps a random `budget`. scripts/compare_selection.py measures what either buys.
"""

from __future__ import annotations

import random


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
    else:
        for task in tasks:
            i, j = rng.sample(range(len(task["responses"])), 2)
            pair = dict(task, responses=[task["responses"][i], task["responses"][j]],
                        meta=dict(task.get("meta", {}), selection={"mode": mode}))
            scored.append((rng.random(), pair))
    scored.sort(key=lambda x: x[0])
    keep = budget if budget > 0 else len(scored)
    return [pair for _, pair in scored[:keep]]
