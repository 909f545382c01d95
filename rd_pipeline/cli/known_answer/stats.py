"""Means with 95% t intervals, for paired per-prompt differences and for figures over seeds."""

from __future__ import annotations

import math
from typing import Any

_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (table to 10, then a
    Cornish-Fisher expansion around the normal quantile, within 0.003 of the exact value)."""
    if df < 1:
        return math.nan
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: list[float]) -> dict[str, Any]:
    """Mean with a 95% t interval (``low``/``high`` None with fewer than two values)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """``a - b`` in accuracy over the prompts both answered, with the 95% paired t interval of the per-prompt
    differences of correctness (each -1, 0 or +1)."""
    shared = sorted(set(a) & set(b))
    return mean_interval([float(a[p]) - float(b[p]) for p in shared])


def mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
