"""The report's inputs, checked and parsed: plain row dicts as read from the eval tables.

- scores: benchmark, model_role, model_version, metric, value, ci_low, ci_high, n (optional eval_key and
  eval_key_parts, the evaluation key the score was made under, shown per benchmark)
- breakdown rows: benchmark, model_role, group_kind, group, value, n (optional ci_low, ci_high)
- reward scores: benchmark, source ("teacher" or "student"), score

Values are fractions. When a role has several rows for the same benchmark and metric, the last one wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rd_pipeline.config import MODEL_ROLES
from rd_pipeline.evaluation.metrics import Estimate, wilson_interval

METRICS = ("accuracy", "win_rate", "lc_win_rate")
ROLE_LABELS = {
    "teacher": "teacher",
    "base_student": "base student",
    "sft_student": "SFT student",
    "rl_student": "RL student",
}
METRIC_LABELS = {"accuracy": "accuracy", "win_rate": "win rate", "lc_win_rate": "LC win rate"}
REWARD_SOURCES = ("teacher", "student")

SCORE_KEYS = ("benchmark", "model_role", "model_version", "metric", "value", "ci_low", "ci_high", "n")
BREAKDOWN_KEYS = ("benchmark", "model_role", "group_kind", "group", "value", "n")
REWARD_KEYS = ("benchmark", "source", "score")


@dataclass(frozen=True)
class Score:
    """One model's score on one benchmark and metric."""

    benchmark: str
    role: str
    version: str
    metric: str
    estimate: Estimate


def _number(row: Mapping[str, Any], key: str, where: str, allow_nan: bool = True) -> float:
    value = row[key]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{where}.{key} = {value!r} is not a number")
    value = float(value)
    if math.isnan(value) and not allow_nan:
        raise ValueError(f"{where}.{key} is NaN")
    return value


def _check_keys(row: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} is a {type(row).__name__}, not a mapping")
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where} lacks field(s) {', '.join(missing)}")


def _checked_rows(
    rows: list[dict], name: str, keys: Iterable[str]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each row of input ``name`` with where it is (``name[i]``), once it is a mapping with every one of ``keys``."""
    for i, row in enumerate(rows):
        where = f"{name}[{i}]"
        _check_keys(row, keys, where)
        yield where, row


def _role(row: Mapping[str, Any], where: str) -> str:
    """The row's model role, one of the pipeline's four."""
    role = row["model_role"]
    if role not in MODEL_ROLES:
        raise ValueError(f"{where}.model_role = {role!r} is not one of {', '.join(MODEL_ROLES)}")
    return role


def parse_scores(scores: list[dict]) -> list[Score]:
    """The scores, checked; of several rows for one benchmark, role and metric, the last."""
    parsed: dict[tuple[str, str, str], Score] = {}
    for where, row in _checked_rows(scores, "scores", SCORE_KEYS):
        role, metric = _role(row, where), row["metric"]
        if metric not in METRICS:
            raise ValueError(f"{where}.metric = {metric!r} is not one of {', '.join(METRICS)}")
        n = _number(row, "n", where, allow_nan=False)
        if n < 0 or n != int(n):
            raise ValueError(f"{where}.n = {row['n']!r} is not a count")
        est = Estimate(
            _number(row, "value", where),
            _number(row, "ci_low", where),
            _number(row, "ci_high", where),
            int(n),
        )
        key = (str(row["benchmark"]), role, metric)
        parsed.pop(key, None)
        parsed[key] = Score(key[0], role, str(row["model_version"]), metric, est)
    return list(parsed.values())


def benchmarks(scores: Iterable[Score]) -> list[str]:
    seen: list[str] = []
    for s in scores:
        if s.benchmark not in seen:
            seen.append(s.benchmark)
    return seen


def roles_present(keys: Iterable[tuple[str, str]]) -> list[str]:
    present = {role for _, role in keys}
    return [r for r in MODEL_ROLES if r in present]


def parse_breakdown(rows: list[dict]) -> dict[tuple[str, str], dict[tuple[str, str], Estimate]]:
    """(benchmark, group_kind) -> {(group, role): estimate}; CI from the row or a Wilson interval."""
    out: dict[tuple[str, str], dict[tuple[str, str], Estimate]] = {}
    for where, row in _checked_rows(rows, "breakdown_rows", BREAKDOWN_KEYS):
        role = _role(row, where)
        value = _number(row, "value", where)
        n = int(_number(row, "n", where, allow_nan=False))
        if "ci_low" in row and "ci_high" in row:
            low, high = _number(row, "ci_low", where), _number(row, "ci_high", where)
        elif n > 0 and 0 <= value <= 1:
            low, high = wilson_interval(round(value * n), n)
        else:
            low = high = math.nan
        table = out.setdefault((str(row["benchmark"]), str(row["group_kind"])), {})
        table[(str(row["group"]), role)] = Estimate(value, low, high, n)
    return out


def parse_rewards(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """benchmark -> source -> its finite reward-model scores."""
    out: dict[str, dict[str, list[float]]] = {}
    for where, row in _checked_rows(rows, "reward_scores", REWARD_KEYS):
        source = row["source"]
        if source not in REWARD_SOURCES:
            raise ValueError(f"{where}.source = {source!r} is not 'teacher' or 'student'")
        score = _number(row, "score", where)
        if math.isfinite(score):
            out.setdefault(str(row["benchmark"]), {}).setdefault(source, []).append(score)
    return out
