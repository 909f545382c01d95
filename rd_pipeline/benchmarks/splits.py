"""Deterministic train/eval assignment of records, and the check that ids are unique."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.records import unit_hash

Split = Literal["train", "eval"]
TRAIN_FRACTION = 0.5


def hash_split(benchmark: str, key: str, train_fraction: float = TRAIN_FRACTION) -> Split:
    """``"train"`` for a stable ``train_fraction`` share of keys, else ``"eval"``."""
    return "train" if unit_hash(benchmark, "split", key) < train_fraction else "eval"


class Identified(Protocol):
    """Anything with a record id, as benchmark items have."""

    @property
    def item_id(self) -> str: ...


def check_unique(items: Sequence[Identified], source: str) -> None:
    """Fail if two items share an id (a duplicated question)."""
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise BenchmarkDataError(source, None, f"duplicate record: item_id {item.item_id!r}")
        seen.add(item.item_id)
