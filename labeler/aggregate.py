"""From rankings to preferences: pairs, aggregation across annotators, and agreement.

A ranking is {response_id: rank} with 1 the best and equal ranks for ties. Pure functions, no database.

Aggregation across the annotators of one task (what `labeler export` trains on):

- **majority** (default): each unordered pair of responses gets one vote per annotator who ranked both:
  "a better", "b better" or "tie". The pair is kept, in the winning direction, only when that direction
  has strictly more votes than the other direction *and* than the ties; otherwise (a split vote, or
  annotators mostly calling it a tie) the pair is dropped. `agreement` is the winning votes over all votes.
- **bradley-terry**: the task's rankings become pairwise wins (a tie is half a win each way), a
  Bradley-Terry model is fitted by Hunter's MM algorithm with a small prior (each response plays
  `prior` wins and `prior` losses against a fixed reference of strength 1, so a response that wins
  everything still gets a finite score), and every pair is ordered by the fitted scores; pairs whose
  scores are equal (within 1e-6) are dropped. It uses the whole ranking, so a pair no annotator
  compared head-on still gets ordered through the others.

Rank gap: for each kept pair, how far apart the rankings that agree with its direction put the two
responses, in rank levels (a tie group is one level), averaged over those rankings (`rank_gap`). The
reward stage can turn it into a margin: pairs further apart should differ more in reward.

Agreement:

- `pairwise_agreement`: over every pair of annotators on a task and every pair of responses both
  ranked, the share whose verdicts ("a better", "b better", "tie": a tie is its own category) match.
- `krippendorff_alpha_rankings`: Krippendorff's alpha with the **ordinal** metric by default. Each
  (task, response) is a unit, the annotators are the coders and the rank they gave is the value.
  Ordinal because a rank says "better than", not by how much: the distance between ranks 1 and 3
  grows with how many values lie between them, not with 3 - 1. Alpha is 1 for perfect agreement,
  0 for agreement at chance level, negative for systematic disagreement, and None when undefined
  (no unit with two annotators, or every value the same).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Iterable

# Bradley-Terry: scores closer than this are "equal" (the MM fit converges to ~1e-10).
BT_EQUAL_TOL = 1e-6


def sort_key_id(response_id: str) -> tuple:
    """Response ids are strings of integers in stored rankings: sort "10" after "9"."""
    return (0, int(response_id), "") if str(response_id).isdigit() else (1, 0, str(response_id))


def compare_ranks(ranking: dict, a: str, b: str) -> str | None:
    """'>' when a is better (lower rank), '<' when b is, '=' for a tie, None when either is unranked."""
    if a not in ranking or b not in ranking:
        return None
    ra, rb = ranking[a], ranking[b]
    return ">" if ra < rb else "<" if ra > rb else "="


def rank_to_pairs(ranking: dict[str, int]) -> list[tuple[str, str]]:
    """Every (better, worse) pair a ranking implies; tied responses give no pair.

    {"a": 1, "b": 2, "c": 2} -> [("a", "b"), ("a", "c")]
    """
    items = sorted(ranking.items(), key=lambda kv: (kv[1], sort_key_id(kv[0])))
    return [(a, b) for (a, ra), (b, rb) in combinations(items, 2) if ra < rb]


def dense_ranks(ranking: dict) -> dict[str, int]:
    """Ranks renumbered by level, 1, 2, 3...: a tie group is one level, so 1, 2, 2, 4 reads as 1, 2, 2, 3.

    The annotation page sends dense ranks (a rank is its group's place in the list); the API accepts any
    numbers with equal ranks for ties. Rank gaps are counted on dense ranks so both mean the same.
    {"a": 1, "b": 2, "c": 2, "d": 4} -> {"a": 1, "b": 2, "c": 2, "d": 3}
    """
    levels = sorted(set(ranking.values()))
    return {str(k): levels.index(v) + 1 for k, v in ranking.items()}


def rank_gap(rankings: list[dict], chosen: str, rejected: str) -> float:
    """How many rank levels apart (dense ranks: 1 for neighbours) the rankings that put `chosen` above
    `rejected` place them, on average; 1.0 when none does (a Bradley-Terry pair ordered through others).

    Only the rankings that agree with the pair's direction count: for a majority pair these are its winning
    votes; ties and votes against are what `agreement` already reports.
    [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 1, "c": 2}], "a", "c" -> (2 + 1) / 2 = 1.5
    """
    gaps = []
    for ranking in rankings:
        dense = dense_ranks(ranking)
        if compare_ranks(dense, str(chosen), str(rejected)) == ">":
            gaps.append(dense[str(rejected)] - dense[str(chosen)])
    return sum(gaps) / len(gaps) if gaps else 1.0


def response_pairs(rankings: Iterable[dict]) -> list[tuple[str, str]]:
    """The unordered pairs (a, b), a before b by id, of responses that appear in any ranking."""
    ids = sorted({str(r) for ranking in rankings for r in ranking}, key=sort_key_id)
    return list(combinations(ids, 2))


def aggregate_majority(rankings: list[dict]) -> dict:
    """Majority direction per unordered pair across annotators (see the module docstring).

    Returns {"pairs": [{"chosen", "rejected", "votes", "against", "ties", "voters", "agreement",
    "annotators"}], "dropped": [{"a", "b", "votes_a", "votes_b", "ties"}]} where "annotators" are
    the indices into `rankings` that ranked both responses. Pairs come sorted by (a, b) id.
    """
    rankings = [{str(k): v for k, v in r.items()} for r in rankings]
    pairs, dropped = [], []
    for a, b in response_pairs(rankings):
        votes = Counter()
        voters = []
        for i, ranking in enumerate(rankings):
            verdict = compare_ranks(ranking, a, b)
            if verdict is not None:
                votes[verdict] += 1
                voters.append(i)
        n = len(voters)
        if votes[">"] > max(votes["<"], votes["="]):
            pairs.append(dict(chosen=a, rejected=b, votes=votes[">"], against=votes["<"], ties=votes["="], voters=n, agreement=votes[">"] / n, annotators=voters))
        elif votes["<"] > max(votes[">"], votes["="]):
            pairs.append(dict(chosen=b, rejected=a, votes=votes["<"], against=votes[">"], ties=votes["="], voters=n, agreement=votes["<"] / n, annotators=voters))
        elif n:
            dropped.append(dict(a=a, b=b, votes_a=votes[">"], votes_b=votes["<"], ties=votes["="]))
    return {"pairs": pairs, "dropped": dropped}


def bradley_terry(rankings: list[dict], iters: int = 200, prior: float = 0.1) -> dict[str, float]:
    """Bradley-Terry log-strengths (centred on 0) fitted to the pairwise wins the rankings imply.

    MM algorithm (Hunter 2004): p_i <- W_i / sum_j n_ij / (p_i + p_j). A tie is half a win each way.
    `prior` adds that many wins and losses against a reference of strength 1 per response, which keeps
    the fit finite when a response wins (or loses) every comparison; prior=0 gives the plain MLE.
    """
    wins: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ids = sorted({str(r) for ranking in rankings for r in ranking}, key=sort_key_id)
    for ranking in rankings:
        ranking = {str(k): v for k, v in ranking.items()}
        for a, b in combinations(sorted(ranking, key=sort_key_id), 2):
            verdict = compare_ranks(ranking, a, b)
            if verdict == ">":
                wins[a][b] += 1
            elif verdict == "<":
                wins[b][a] += 1
            else:
                wins[a][b] += 0.5
                wins[b][a] += 0.5
    total_wins = {i: sum(wins[i].values()) for i in ids}
    games = {i: {j: wins[i][j] + wins[j][i] for j in ids if j != i and wins[i][j] + wins[j][i] > 0} for i in ids}
    p = {i: 1.0 for i in ids}
    for _ in range(iters):
        new = {}
        for i in ids:
            denom = sum(n / (p[i] + p[j]) for j, n in games[i].items()) + 2 * prior / (p[i] + 1.0)
            num = total_wins[i] + prior
            # With prior=0 a response that never wins would go to 0 (log -inf); keep it tiny instead.
            new[i] = max(num / denom, 1e-12) if denom > 0 else 1.0
        if prior == 0:  # without the reference the scale floats: pin the geometric mean to 1
            g = math.exp(sum(math.log(v) for v in new.values()) / len(new))
            new = {i: v / g for i, v in new.items()}
        done = max(abs(math.log(new[i]) - math.log(p[i])) for i in ids) < 1e-12 if ids else True
        p = new
        if done:
            break
    logs = {i: math.log(v) for i, v in p.items()}
    mean = sum(logs.values()) / len(logs) if logs else 0.0
    return {i: v - mean for i, v in logs.items()}


def order_by_scores(scores: dict[str, float]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(better, worse) pairs ordered by score, and the unordered pairs dropped as equal."""
    kept, equal = [], []
    for a, b in combinations(sorted(scores, key=sort_key_id), 2):
        if abs(scores[a] - scores[b]) < BT_EQUAL_TOL:
            equal.append((a, b))
        else:
            kept.append((a, b) if scores[a] > scores[b] else (b, a))
    return kept, equal


def pairwise_agreement(units: list[list[dict]]) -> float | None:
    """Share of (annotator pair x response pair) comparisons with the same verdict; None if none."""
    agree = total = 0
    for rankings in units:
        rankings = [{str(k): v for k, v in r.items()} for r in rankings]
        for r1, r2 in combinations(rankings, 2):
            for a, b in combinations(sorted(set(r1) & set(r2), key=sort_key_id), 2):
                total += 1
                agree += compare_ranks(r1, a, b) == compare_ranks(r2, a, b)
    return agree / total if total else None


def krippendorff_alpha(units: list[list[float]], metric: str = "ordinal") -> float | None:
    """Krippendorff's alpha from units of values (each unit: the values its coders gave; missing
    values are simply absent). Metrics: "nominal", "ordinal", "interval". None when undefined.

    alpha = 1 - (n - 1) * sum_ck o_ck d2(c,k) / sum_ck n_c n_k d2(c,k), with o the coincidence matrix.
    """
    if metric not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"unknown metric {metric!r}; use nominal, ordinal or interval")
    coincidence: dict[tuple, float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue  # a value nobody else coded is not pairable
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(values[i], values[j])] += 1.0 / (m - 1)
    n_c: dict = defaultdict(float)
    for (c, _k), o in coincidence.items():
        n_c[c] += o
    n = sum(n_c.values())
    values_sorted = sorted(n_c)
    if n <= 1 or len(values_sorted) < 2:
        return None

    def delta2(c, k) -> float:
        if metric == "nominal":
            return 0.0 if c == k else 1.0
        if metric == "interval":
            return float(c - k) ** 2
        lo, hi = min(c, k), max(c, k)
        between = sum(n_c[g] for g in values_sorted if lo <= g <= hi)
        return (between - (n_c[lo] + n_c[hi]) / 2) ** 2

    observed = sum(o * delta2(c, k) for (c, k), o in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in values_sorted for k in values_sorted)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def krippendorff_alpha_rankings(units: list[list[dict]], metric: str = "ordinal") -> float | None:
    """Alpha over rankings: units are tasks, each the list of its annotators' rankings; every
    (task, response) becomes one alpha unit whose values are the ranks it received."""
    value_units = []
    for rankings in units:
        by_response: dict[str, list] = defaultdict(list)
        for ranking in rankings:
            for rid, rank in ranking.items():
                by_response[str(rid)].append(rank)
        value_units.extend(by_response[r] for r in sorted(by_response, key=sort_key_id))
    return krippendorff_alpha(value_units, metric)
