"""Point estimates with 95% confidence intervals: accuracy, pairwise win rate, per-group breakdowns.

All values are fractions in [0, 1]. An estimate over no observations has ``value`` and both bounds NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% confidence interval over ``n`` observations.

    ``n_excluded`` counts observations left out of ``n`` (unparsable judge verdicts).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_excluded: int = 0

    @property
    def half_width(self) -> float:
        """Half the width of the interval (the "±" shown in tables)."""
        return (self.ci_high - self.ci_low) / 2


def _empty(n_excluded: int = 0) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, 0, n_excluded)


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion with ``successes`` out of ``n``.

    With p = successes / n the bounds are
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a point
    at p = 0 or p = 1, which matters for the small eval subsets this pipeline runs on.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes={successes} must lie in [0, n={n}]")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def training_phase(step: int | None, steps: int | None) -> str | None:
    """Where ``step`` falls in a run that trained ``steps`` optimizer steps: "start" (step 0, the model before
    training) or its "early", "middle" or "late" third; None when either is unknown. A selected checkpoint early
    in training hints at over-training (too high a learning rate, too many epochs), a late one at under-training."""
    if step is None or not steps:
        return None
    if step == 0:
        return "start"
    return "early" if 3 * step <= steps else "middle" if 3 * step <= 2 * steps else "late"


def accuracy(correct: Sequence[bool]) -> Estimate:
    """Fraction correct, with a 95% Wilson score interval (see :func:`wilson_interval`)."""
    for i, c in enumerate(correct):
        if not isinstance(c, bool | np.bool_ | numbers.Integral) or c not in (0, 1):
            raise ValueError(f"accuracy: correct[{i}] = {c!r} is not a boolean")
    n = len(correct)
    if n == 0:
        return _empty()
    k = sum(bool(c) for c in correct)
    low, high = wilson_interval(k, n)
    return Estimate(k / n, low, high, n)


def win_rate(preferences: Sequence[float | None]) -> Estimate:
    """Win rate of a model against a baseline from per-comparison preferences.

    Each preference is 1.0 (model wins), 0.5 (tie) or 0.0 (baseline wins); any value in [0, 1]
    is accepted as a soft preference. ``None`` (or NaN) marks an unparsable verdict: it is excluded from
    ``n`` and counted in ``n_excluded``. The value is the mean preference, so a tie counts half a win.
    The interval is the Wilson score interval of the half-credit score (the sum of the preferences out of
    ``n``, see :func:`wilson_interval`). A variable in [0, 1] with mean p has variance at most p(1-p), so this
    interval is conservative for ties and soft preferences, stays valid at small ``n`` (one judgement
    included) and never has zero width: n comparisons that all tie still leave the win rate uncertain.
    """
    values: list[float] = []
    excluded = 0
    for i, p in enumerate(preferences):
        if p is None or (isinstance(p, numbers.Real) and math.isnan(p)):
            excluded += 1
            continue
        if isinstance(p, bool | np.bool_) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"win_rate: preferences[{i}] = {p!r} is not None or a number in [0, 1]")
        values.append(float(p))
    n = len(values)
    if n == 0:
        return _empty(excluded)
    total = min(float(n), sum(values))  # float rounding must not push the sum past n
    low, high = wilson_interval(total, n)
    return Estimate(total / n, low, high, n, excluded)


def breakdown(correct: Sequence[bool], groups: Sequence[str]) -> dict[str, Estimate]:
    """Accuracy per group (GSM-Plus perturbation type, MMLU-Pro category), keys sorted by name."""
    if len(correct) != len(groups):
        raise ValueError(f"breakdown: correct has {len(correct)} items but groups has {len(groups)}")
    by_group: dict[str, list[bool]] = {}
    for i, (c, g) in enumerate(zip(correct, groups, strict=True)):
        if not isinstance(g, str) or not g:
            raise ValueError(f"breakdown: groups[{i}] = {g!r} is not a non-empty string")
        by_group.setdefault(g, []).append(c)
    return {g: accuracy(by_group[g]) for g in sorted(by_group)}


def difference_interval(a: Estimate, b: Estimate) -> tuple[float, float, float]:
    """``a - b`` with a 95% interval by Newcombe's method (each estimate's own interval, combined).

    ``low = d - sqrt((a - a_low)² + (b_high - b)²)``, ``high = d + sqrt((a_high - a)² + (b - b_low)²)``.
    It treats the two estimates as independent; when both were measured on the same prompts the
    true interval is usually narrower, so this one errs on the wide side.
    """
    d = a.value - b.value
    low = d - math.hypot(a.value - a.ci_low, b.ci_high - b.value)
    high = d + math.hypot(a.ci_high - a.value, b.value - b.ci_low)
    return d, low, high


def surpass_summary(student: Estimate, teacher: Estimate, metric: str = "score") -> str:
    """One line: does the student surpass the teacher, by how much, and the 95% interval of the difference.

    Differences are in percentage points. The verdict is "surpasses" or "falls short of" only when
    the interval of the difference excludes zero; otherwise the two are called level.
    """
    if math.isnan(student.value) or math.isnan(teacher.value):
        return f"{metric}: cannot compare (student n={student.n}, teacher n={teacher.n})"
    d, low, high = difference_interval(student, teacher)
    head = (
        f"{metric}: student {100 * student.value:.1f}% (n={student.n}) vs teacher "
        f"{100 * teacher.value:.1f}% (n={teacher.n}), difference {100 * d:+.1f} pts"
    )
    if math.isnan(low) or math.isnan(high):
        verdict = (
            "higher, no interval" if d > 0 else ("lower, no interval" if d < 0 else "level, no interval")
        )
        return f"{head}: student is {verdict}"
    ci = f"95% CI [{100 * low:+.1f}, {100 * high:+.1f}]"
    if low > 0:
        verdict = "student SURPASSES the teacher"
    elif high < 0:
        verdict = "student falls short of the teacher"
    else:
        verdict = "no significant difference"
    return f"{head}, {ci}: {verdict}"
