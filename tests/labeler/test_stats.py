"""Bootstrap intervals (labeler.stats): hand-computed quantiles, degenerate inputs, coverage of the mean."""

import pytest

from labeler.stats import bootstrap_ci, paired_bootstrap_ci, quantile, share_with_ci


def test_quantile_interpolates_between_ranks():
    assert quantile([0.0, 10.0], 0.25) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.975) == pytest.approx(4.9)


def test_constant_and_tiny_samples_have_no_spread():
    assert bootstrap_ci([1, 1, 1, 1]) == [1.0, 1.0]
    assert bootstrap_ci([0.3]) == [0.3, 0.3]
    assert bootstrap_ci([]) is None
    assert share_with_ci([]) == {"value": None, "ci": None, "n": 0}


def test_interval_brackets_the_share_and_narrows_with_more_items():
    few = [1, 0] * 10  # 20 items, share 0.5
    many = [1, 0] * 200  # 400 items, share 0.5
    lo, hi = bootstrap_ci(few)
    lo2, hi2 = bootstrap_ci(many)
    assert lo < 0.5 < hi and lo2 < 0.5 < hi2
    assert (hi2 - lo2) < (hi - lo) / 2  # width ~ 1/sqrt(n): 400 items give about a quarter of 20's
    # the normal approximation for a share: 1.96 * sqrt(p(1-p)/n) = 0.049 for n = 400
    assert hi2 - lo2 == pytest.approx(2 * 0.049, abs=0.015)


def test_seeded_and_reproducible():
    data = [0, 1, 1, 0, 1, 1, 1, 0]
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)


def test_paired_interval_sees_a_consistent_gain_that_unpaired_noise_hides():
    # each item's new score is its old score + 0.1: the paired difference has no spread at all
    old = [0.0, 1.0, 0.5, 0.2, 0.9, 0.4, 0.7, 0.1]
    new = [x + 0.1 for x in old]
    lo, hi = paired_bootstrap_ci(new, old)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_custom_statistic_is_resampled_by_item():
    rows = [(3, 4), (1, 2), (0, 1)]  # (met, total) per prompt: ratio of sums 4/7
    ratio = lambda rs: sum(m for m, _ in rs) / sum(t for _, t in rs)  # noqa: E731
    lo, hi = bootstrap_ci(rows, ratio)
    assert 0.0 <= lo <= 4 / 7 <= hi <= 1.0
