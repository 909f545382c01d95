"""Metric functions against hand-computed values."""

import math

import numpy as np
import pytest

from rd_pipeline.evaluation.metrics import (
    Estimate,
    accuracy,
    breakdown,
    difference_interval,
    surpass_summary,
    wilson_interval,
    win_rate,
)


def test_accuracy_with_wilson_interval_matches_hand_computation():
    # 8 of 10: z² = 3.8415, centre = (0.8 + 0.19207) / 1.38415 = 0.71673,
    # half = 1.96 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658.
    est = accuracy([True] * 8 + [False] * 2)
    assert est.value == 0.8 and est.n == 10
    assert est.ci_low == pytest.approx(0.49016, abs=1e-4)
    assert est.ci_high == pytest.approx(0.94332, abs=1e-4)


def test_wilson_interval_does_not_collapse_at_the_edges():
    # 0 of 10: upper bound z² / (n + z²) = 3.8415 / 13.8415 = 0.27753.
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.27753, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.27753, abs=1e-4)


def test_wilson_interval_narrows_with_n_and_contains_p():
    widths = []
    for n in (10, 100, 1000):
        low, high = wilson_interval(0.3 * n, n)
        assert low < 0.3 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_accuracy_accepts_numpy_booleans_and_rejects_other_values():
    assert accuracy(list(np.array([1, 0, 1, 1]) == 1)).value == 0.75
    with pytest.raises(ValueError, match=r"correct\[1\] = 'yes'"):
        accuracy([True, "yes"])
    with pytest.raises(ValueError, match=r"correct\[0\] = 2"):
        accuracy([2])


def test_empty_accuracy_is_nan():
    est = accuracy([])
    assert est.n == 0 and math.isnan(est.value) and math.isnan(est.ci_low)


def test_win_rate_counts_ties_half_and_excludes_unparsable():
    # mean of (1, 0.5, 0, 1) = 0.625: 2.5 half-credit wins of 4, with the Wilson interval of 2.5 / 4.
    est = win_rate([1.0, 0.5, 0.0, None, 1.0])
    assert est.value == pytest.approx(0.625)
    assert est.n == 4 and est.n_excluded == 1
    assert (est.ci_low, est.ci_high) == pytest.approx(wilson_interval(2.5, 4))
    # centre (0.625 + 0.48019) / 1.96037 = 0.56376, half 1.96 * sqrt(0.05859 + 0.06002) / 1.96037 = 0.34434
    assert est.ci_low == pytest.approx(0.2194, abs=1e-4) and est.ci_high == pytest.approx(0.9081, abs=1e-4)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 40])
def test_win_rate_interval_has_width_when_every_comparison_ties(n):
    est = win_rate([0.5] * n)
    assert est.value == 0.5 and est.n == n
    assert 0.0 <= est.ci_low < 0.5 < est.ci_high <= 1.0
    assert est.ci_high - est.ci_low > 0.25  # 40 ties say little: about ±15 points
    low, high = wilson_interval(n / 2, n)
    assert (est.ci_low, est.ci_high) == pytest.approx((low, high))


def test_win_rate_interval_at_small_n_covers_what_one_judgement_allows():
    one_win = win_rate([1.0])
    assert one_win.value == 1.0 and one_win.ci_high == 1.0 and 0.0 < one_win.ci_low < 0.5
    unanimous = win_rate([1.0] * 5)
    assert unanimous.ci_high == 1.0 and unanimous.ci_low == pytest.approx(0.5655, abs=1e-4)
    soft = win_rate([0.55, 0.6, 0.45])
    assert soft.ci_low < soft.value < soft.ci_high and soft.value == pytest.approx(1.6 / 3)


def test_win_rate_treats_nan_as_unparsable_and_rejects_bad_values():
    assert win_rate([1.0, float("nan"), 0.0]).n_excluded == 1
    with pytest.raises(ValueError, match=r"preferences\[2\] = 1.5"):
        win_rate([1.0, 0.0, 1.5])
    with pytest.raises(ValueError, match=r"preferences\[0\] = 'A'"):
        win_rate(["A"])


def test_win_rate_with_all_unparsable_or_single_judgement():
    none = win_rate([None, None])
    assert none.n == 0 and none.n_excluded == 2 and math.isnan(none.value)
    one = win_rate([0.5])
    assert one.value == 0.5 and one.ci_low < 0.5 < one.ci_high


def test_breakdown_per_group():
    correct = [True, False, True, True, False, False]
    groups = ["b", "a", "b", "a", "c", "b"]
    out = breakdown(correct, groups)
    assert list(out) == ["a", "b", "c"]
    assert out["a"].value == 0.5 and out["a"].n == 2
    assert out["b"].value == pytest.approx(2 / 3) and out["b"].n == 3
    assert out["c"].value == 0.0 and out["c"].n == 1
    with pytest.raises(ValueError, match="6 items but groups has 5"):
        breakdown(correct, groups[:5])


def test_difference_interval_newcombe():
    a = Estimate(0.6, 0.5, 0.7, 100)
    b = Estimate(0.4, 0.3, 0.5, 100)
    d, low, high = difference_interval(a, b)
    assert d == pytest.approx(0.2)
    assert low == pytest.approx(0.2 - math.hypot(0.1, 0.1))
    assert high == pytest.approx(0.2 + math.hypot(0.1, 0.1))


def test_surpass_summary_verdicts():
    teacher = accuracy([True] * 60 + [False] * 40)
    better = surpass_summary(accuracy([True] * 80 + [False] * 20), teacher, "accuracy")
    assert "SURPASSES" in better and "+20.0 pts" in better and "95% CI" in better
    worse = surpass_summary(accuracy([True] * 30 + [False] * 70), teacher, "accuracy")
    assert "falls short" in worse and "-30.0 pts" in worse
    level = surpass_summary(accuracy([True] * 62 + [False] * 38), teacher, "accuracy")
    assert "no significant difference" in level and "+2.0 pts" in level
    assert "\n" not in level
    assert "cannot compare" in surpass_summary(accuracy([]), teacher)
