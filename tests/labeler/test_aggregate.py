"""Pure aggregation functions against hand-computed expectations."""

import math

import pytest

from labeler.aggregate import (
    aggregate_majority,
    bradley_terry,
    dense_ranks,
    krippendorff_alpha,
    krippendorff_alpha_rankings,
    order_by_scores,
    pairwise_agreement,
    rank_gap,
    rank_to_pairs,
)


def test_rank_to_pairs_with_tie():
    # b and c tie: a beats both, no pair between them
    assert rank_to_pairs({"a": 1, "b": 2, "c": 2}) == [("a", "b"), ("a", "c")]
    assert rank_to_pairs({"7": 3, "10": 1, "9": 2}) == [("10", "9"), ("10", "7"), ("9", "7")]
    assert rank_to_pairs({"a": 1, "b": 1}) == []


def test_dense_ranks_count_a_tie_group_as_one_level():
    assert dense_ranks({"a": 1, "b": 2, "c": 2, "d": 4}) == {"a": 1, "b": 2, "c": 2, "d": 3}  # the API's style
    assert dense_ranks({"a": 1, "b": 2, "c": 2, "d": 3}) == {"a": 1, "b": 2, "c": 2, "d": 3}  # the page's style
    assert dense_ranks({7: 3, 10: 3}) == {"7": 1, "10": 1}


def test_rank_gap_averages_the_agreeing_rankings():
    rankings = [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 1, "c": 3}, {"a": 2, "b": 1, "c": 3}]
    # a > c: gaps 2, 1 (the second ranking is dense 1, 1, 2), 1
    assert rank_gap(rankings, "a", "c") == pytest.approx(4 / 3)
    # a > b: only the first agrees (the second ties, the third is against): gap 1
    assert rank_gap(rankings, "a", "b") == 1.0
    # b > a: only the third agrees
    assert rank_gap(rankings, "b", "a") == 1.0
    # no ranking puts c above a (a Bradley-Terry pair can be ordered through others): 1.0, the least gap
    assert rank_gap(rankings, "c", "a") == 1.0
    assert rank_gap([{"1": 1, "2": 4}], 1, 2) == 1.0  # ids as ints or strings; ranks 1 and 4 are neighbours


def test_majority_three_annotators():
    rankings = [
        {"a": 1, "b": 2, "c": 3},  # a > b > c
        {"a": 2, "b": 1, "c": 3},  # b > a > c
        {"a": 1, "b": 2, "c": 2},  # a > b = c
    ]
    result = aggregate_majority(rankings)
    got = {(p["chosen"], p["rejected"]): (p["votes"], p["against"], p["ties"], round(p["agreement"], 4)) for p in result["pairs"]}
    assert got == {
        ("a", "b"): (2, 1, 0, round(2 / 3, 4)),
        ("a", "c"): (3, 0, 0, 1.0),
        ("b", "c"): (2, 0, 1, round(2 / 3, 4)),
    }
    assert result["dropped"] == []


def test_majority_drops_splits_and_tie_pluralities():
    split = aggregate_majority([{"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 1}])
    assert split["pairs"] == [] and split["dropped"] == [{"a": "a", "b": "b", "votes_a": 2, "votes_b": 2, "ties": 0}]
    mostly_tied = aggregate_majority([{"a": 1, "b": 2}, {"a": 1, "b": 1}, {"a": 1, "b": 1}])
    assert mostly_tied["pairs"] == [] and len(mostly_tied["dropped"]) == 1
    reversed_ = aggregate_majority([{"a": 2, "b": 1}])
    assert [(p["chosen"], p["rejected"]) for p in reversed_["pairs"]] == [("b", "a")]


def test_bradley_terry_orders_and_matches_mle():
    scores = bradley_terry([{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3}, {"a": 2, "b": 1, "c": 3}])
    assert scores["a"] > scores["b"] > scores["c"]
    assert order_by_scores(scores) == ([("a", "b"), ("a", "c"), ("b", "c")], [])
    # two items, a wins 3 of 4: the plain MLE (prior=0) has p_a / p_b = 3
    mle = bradley_terry([{"a": 1, "b": 2}] * 3 + [{"a": 2, "b": 1}], prior=0)
    assert math.exp(mle["a"] - mle["b"]) == pytest.approx(3.0, rel=1e-6)
    # the prior keeps an undefeated response finite, and symmetric evidence gives equal scores
    undefeated = bradley_terry([{"a": 1, "b": 2}] * 5)
    assert math.isfinite(undefeated["a"]) and undefeated["a"] > undefeated["b"]
    even = bradley_terry([{"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 1, "b": 1}])
    assert order_by_scores(even) == ([], [("a", "b")])


def test_krippendorff_textbook_example():
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", the 4 coders x 12 units example
    # with missing values; published: nominal .743, ordinal .815, interval .849.
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[v for v in column if v is not None] for column in zip(*coders)]
    assert round(krippendorff_alpha(units, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(units, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(units, "interval"), 3) == 0.849


def test_krippendorff_rankings():
    same = {"1": 1, "2": 2, "3": 3}
    assert krippendorff_alpha_rankings([[same, same, same], [{"4": 2, "5": 1}, {"4": 2, "5": 1}]]) == pytest.approx(1.0)
    # By hand, two annotators reversing a pair: units a=[1,2], b=[2,1]; o_12 = o_21 = 2, n_1 = n_2 = 2,
    # n = 4; ordinal d2(1,2) = (n_1 + n_2 - (n_1 + n_2) / 2)^2 = 4;
    # alpha = 1 - (n - 1) * (2*4 + 2*4) / (2*2*4 + 2*2*4) = 1 - 3 * 16 / 32 = -0.5
    assert krippendorff_alpha_rankings([[{"a": 1, "b": 2}, {"a": 2, "b": 1}]]) == pytest.approx(-0.5)
    # a single annotator per task gives nothing pairable: undefined
    assert krippendorff_alpha_rankings([[same]]) is None


def test_pairwise_agreement_counts_ties_as_a_category():
    # (a,b) agree, (a,c) agree, (b,c) '>' vs '=' disagree: 2 of 3
    assert pairwise_agreement([[{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 2}]]) == pytest.approx(2 / 3)
    # plus a task with three annotators x, y, z on one pair: only (x, z) of 3 annotator pairs agrees,
    # so 2 + 1 of 3 + 3 in all
    units = [[{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 2}], [{"p": 1, "q": 2}, {"p": 2, "q": 1}, {"p": 1, "q": 2}]]
    assert pairwise_agreement(units) == pytest.approx(3 / 6)
    assert pairwise_agreement([[{"a": 1, "b": 2}]]) is None
