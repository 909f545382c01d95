"""The AlpacaEval 2 length-controlled win rate on small cases with known answers."""

import math

import numpy as np
import pytest

from rd_pipeline.evaluation.length_control import fit_length_glm, length_controlled_win_rate
from rd_pipeline.evaluation.metrics import win_rate


def test_equal_lengths_give_the_raw_win_rate():
    prefs = [1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0]
    est = length_controlled_win_rate(prefs, [100] * 8, [100] * 8, list(range(8)))
    assert est.value == pytest.approx(win_rate(prefs).value, abs=2e-3)
    assert est.ci_low < est.value < est.ci_high
    assert est.n == 8


def test_a_model_that_wins_only_by_length_is_brought_back_to_a_coin_flip():
    # Longer on 15 instructions, winning 12 of them (80%); shorter on 5, winning 1 (20%).
    # Raw win rate 13/20 = 0.65. With the length difference ±100, tanh(Δ/std) is ±a, and the saturated
    # fit gives θ + φa = logit(0.8), θ - φa = logit(0.2), so θ = 0 and the LC win rate is 0.5.
    prefs = [1.0] * 12 + [0.0] * 3 + [1.0] + [0.0] * 4
    model = [300] * 15 + [100] * 5
    base = [200] * 20
    raw = win_rate(prefs).value
    assert raw == pytest.approx(0.65)
    no_instruction_terms = length_controlled_win_rate(prefs, model, base, range(20), instruction_l2=1e8)
    assert no_instruction_terms.value == pytest.approx(0.5, abs=1e-3)
    default = length_controlled_win_rate(prefs, model, base, range(20))
    assert default.value == pytest.approx(0.5, abs=0.02)
    assert default.value < raw


def test_a_shorter_model_gets_credit_for_winning_anyway():
    rng = np.random.default_rng(3)
    n = 300
    model = rng.integers(200, 800, n)
    base = model + rng.integers(100, 600, n)  # the baseline is always longer
    prefs = list((rng.random(n) < 0.55).astype(float))
    est = length_controlled_win_rate(prefs, list(model), list(base), list(range(n)), n_bootstrap=50)
    assert est.value > win_rate(prefs).value


def test_recovers_a_known_glm_on_simulated_judgements():
    rng = np.random.default_rng(0)
    n = 2000
    diff = rng.normal(0, 400, n)
    x = np.tanh(diff / diff.std(ddof=1))
    theta, phi = 0.4, 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-(theta + phi * x)))).astype(float)
    fit = fit_length_glm(y, diff, np.arange(n), n, instruction_l2=50.0)
    assert fit.theta == pytest.approx(theta, abs=0.15)
    assert fit.phi == pytest.approx(phi, abs=0.25)
    assert fit.lc_win_rate() == pytest.approx(1 / (1 + math.exp(-theta)), abs=0.04)


def test_shared_instruction_ids_and_unparsable_rows():
    # Both judge orders of 4 instructions; one verdict unparsable.
    prefs = [1.0, 1.0, 0.0, 0.0, 1.0, None, 0.5, 0.5]
    ids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    est = length_controlled_win_rate(prefs, [50] * 8, [50] * 8, ids, n_bootstrap=100)
    assert est.n == 7 and est.n_excluded == 1
    assert 0.0 < est.ci_low <= est.value <= est.ci_high < 1.0


def test_bootstrap_is_seeded():
    prefs = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 1.0]
    lengths = [120, 80, 200, 150, 100, 60, 300, 90, 110, 130]
    base = [100] * 10
    a = length_controlled_win_rate(prefs, lengths, base, range(10), seed=7)
    b = length_controlled_win_rate(prefs, lengths, base, range(10), seed=7)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


def test_degenerate_and_bad_inputs():
    one = length_controlled_win_rate([1.0], [10], [5], ["x"])
    assert one.n == 1 and 0.0 < one.ci_low < 0.5 and one.ci_high > 0.99
    empty = length_controlled_win_rate([None], [10], [5], ["x"])
    assert empty.n == 0 and empty.n_excluded == 1 and math.isnan(empty.value)
    with pytest.raises(ValueError, match="equal lengths"):
        length_controlled_win_rate([1.0, 0.0], [10], [5, 5], ["x", "y"])
    with pytest.raises(ValueError, match=r"model_lengths\[1\] = -3"):
        length_controlled_win_rate([1.0, 0.0], [10, -3], [5, 5], ["x", "y"])
    with pytest.raises(ValueError, match=r"preferences\[0\] = 2.0"):
        length_controlled_win_rate([2.0], [10], [5], ["x"])


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_interval_has_width_when_every_comparison_ties(n):
    est = length_controlled_win_rate([0.5] * n, [100 + 10 * i for i in range(n)], [100] * n, range(n))
    assert est.value == pytest.approx(0.5, abs=1e-3)
    assert est.ci_low < est.value < est.ci_high
    assert est.ci_high - est.ci_low >= 0.9 * (win_rate([0.5] * n).ci_high - win_rate([0.5] * n).ci_low)


def test_unanimous_small_sample_keeps_a_wide_interval():
    est = length_controlled_win_rate([1.0, 1.0, 1.0], [120, 130, 90], [100] * 3, ["a", "b", "c"])
    assert est.value > 0.9 and est.ci_low < 0.6 and est.ci_high <= 1.0
