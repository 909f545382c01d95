"""Drift between two evaluations under the same key: a score that left the 95% interval of the one stored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ScoreDrift:
    """One model and metric, scored before (``old``, with its 95% interval) and again (``new``)."""

    model_role: str
    metric: str
    old: float | None
    new: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def drifted(self) -> bool:
        """Whether the new score lies outside the stored score's interval (or only one of them exists or is
        defined)."""
        old, new = _defined(self.old), _defined(self.new)
        if old is None or new is None:
            return (old is None) != (new is None)
        low, high = _defined(self.ci_low), _defined(self.ci_high)
        if low is None or high is None:
            return new != old
        return not low - 1e-12 <= new <= high + 1e-12

    @property
    def label(self) -> str:
        return f"{self.model_role} {self.metric}"

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON values (an undefined score is null)."""
        values = {name: _defined(getattr(self, name)) for name in ("old", "new", "ci_low", "ci_high")}
        return asdict(self) | values | {"drifted": self.drifted}


def _defined(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def compare_scores(stored: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[ScoreDrift]:
    """Each model and metric of either evaluation (eval_scores rows), its stored and new score side by side."""
    before = {(row["model_role"], row["metric"]): row for row in stored}
    after = {(row["model_role"], row["metric"]): row for row in new}
    compared = []
    for role, metric in sorted(before.keys() | after.keys()):
        old_row, new_row = before.get((role, metric), {}), after.get((role, metric), {})
        compared.append(
            ScoreDrift(
                role,
                metric,
                old_row.get("value"),
                new_row.get("value"),
                old_row.get("ci_low"),
                old_row.get("ci_high"),
            )
        )
    return compared
