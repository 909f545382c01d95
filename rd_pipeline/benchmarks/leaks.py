"""Finding train prompts that are also evaluation questions, compared after normalizing whitespace and case."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from rd_pipeline.benchmarks.base import BenchmarkItem

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """``text`` with runs of whitespace collapsed to one space, trimmed and case-folded."""
    return _SPACE.sub(" ", text).strip().casefold()


def match_texts(item: BenchmarkItem) -> set[str]:
    """The normalized texts an item could leak: its question and, for GSM-Plus, the seed question it perturbs."""
    texts = {normalize_text(item.question)}
    seed = item.meta.get("seed_question")
    if seed:
        texts.add(normalize_text(seed))
    return texts


def question_texts(items: Iterable[BenchmarkItem]) -> frozenset[str]:
    """The normalized questions of ``items``."""
    return frozenset(normalize_text(item.question) for item in items)


def drop_matching(
    train: Sequence[BenchmarkItem], eval_questions: frozenset[str]
) -> tuple[list[BenchmarkItem], int]:
    """The train items none of whose texts is an eval question, and how many were dropped."""
    kept = [item for item in train if not match_texts(item) & eval_questions]
    return kept, len(train) - len(kept)


def count_matches(train: Sequence[BenchmarkItem], held_out: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """For each held-out set (by benchmark name), how many train items have a text in it."""
    return {name: sum(bool(match_texts(item) & texts) for item in train) for name, texts in held_out.items()}
