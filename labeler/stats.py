"""Bootstrap confidence intervals: every figure this project reports carries one.

Pure Python (the labeler stays free of numpy and torch), seeded, percentile intervals:

    bootstrap_ci([1, 0, 1, 1])                       # a share (pass rate, accuracy): mean over items
    bootstrap_ci(rows, statistic=ratio)             # any statistic of a list of items
    paired_bootstrap_ci(new, old)                   # mean(new - old) over the same items (prompts)

Items are resampled with replacement `resamples` times; the interval is the (1-level)/2 and
(1+level)/2 quantiles of the statistic over the resamples. With one item, or none, the interval is
the statistic itself (or None): there is no spread to measure, and the figure's count says so.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
RESAMPLES = 2000
LEVEL = 0.95


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default 'linear' method)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_ci(items: Sequence[T], statistic: Callable[[Sequence[T]], float] = mean,
                 resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> list[float] | None:
    """[low, high]: the percentile bootstrap interval of `statistic(items)`; None for no items."""
    items = list(items)
    if not items:
        return None
    if len(items) == 1:
        value = float(statistic(items))
        return [value, value]
    rng = random.Random(seed)
    n = len(items)
    values = []
    for _ in range(resamples):
        sample = [items[rng.randrange(n)] for _ in range(n)]
        value = statistic(sample)
        if value == value:  # a statistic may be undefined (NaN) on an unlucky resample: leave it out
            values.append(float(value))
    if not values:
        return None
    values.sort()
    return [quantile(values, (1 - level) / 2), quantile(values, (1 + level) / 2)]


def paired_bootstrap_ci(new: Sequence[float], old: Sequence[float], resamples: int = RESAMPLES,
                        level: float = LEVEL, seed: int = 0) -> list[float] | None:
    """Interval of mean(new) - mean(old) when both were measured on the same items, resampled together."""
    if len(new) != len(old):
        raise ValueError(f"paired figures need the same items: {len(new)} vs {len(old)}")
    return bootstrap_ci([a - b for a, b in zip(new, old)], resamples=resamples, level=level, seed=seed)


def share_with_ci(successes: Sequence[float], seed: int = 0) -> dict:
    """{"value", "ci", "n"} for a share of 0/1 (or 0/0.5/1 for ties) outcomes."""
    if not successes:
        return {"value": None, "ci": None, "n": 0}
    return {"value": mean(successes), "ci": bootstrap_ci(successes, seed=seed), "n": len(successes)}
