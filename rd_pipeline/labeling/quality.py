"""How good the pseudo-labels are where gold answers exist: accuracy, coverage, accuracy by vote share.

Gold answers are read here only to measure the labels; nothing computed here feeds training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rd_pipeline.labeling.vote import VoteResult

SHARE_BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class LabelRecord:
    """One prompt's vote and whether its majority answer matches gold (None: no answer or no gold)."""

    prompt_id: str
    answer: str | None
    share: float
    labelled: bool
    matches_gold: bool | None


def label_record(
    prompt_id: str, vote: VoteResult, gold: str | None, equal: Callable[[str, str], bool]
) -> LabelRecord:
    """A prompt's vote compared with its gold answer."""
    matches = None if vote.answer is None or gold is None else bool(equal(vote.answer, gold))
    return LabelRecord(prompt_id, vote.answer, vote.share, vote.labelled, matches)


def _bucket(share: float) -> str:
    for low, high in zip(SHARE_BUCKETS, SHARE_BUCKETS[1:], strict=False):
        if share < high or high == SHARE_BUCKETS[-1]:
            return f"{low:.1f}-{high:.1f}"
    raise AssertionError("unreachable")


def label_quality(records: Iterable[LabelRecord]) -> dict:
    """Pseudo-label quality.

    Keys: ``n_prompts``; ``coverage`` (share of prompts labelled); ``n_labelled``; ``label_accuracy``
    (labelled prompts whose answer matches gold, among those with gold; None if none); ``mean_vote_share``
    (over labelled prompts); ``majority_accuracy`` (the same for every prompt with a majority answer,
    labelled or not); ``by_share`` (bucket ``"low-high"`` of the vote share -> ``{"n", "accuracy"}``,
    over every prompt with an answer and gold; upper bounds exclusive except 1.0).
    """
    records = list(records)
    labelled = [r for r in records if r.labelled]
    judged_labelled = [r for r in labelled if r.matches_gold is not None]
    with_gold = [r for r in records if r.matches_gold is not None]
    buckets: dict[str, list[bool]] = {}
    for record in with_gold:
        buckets.setdefault(_bucket(record.share), []).append(bool(record.matches_gold))
    return {
        "n_prompts": len(records),
        "n_labelled": len(labelled),
        "coverage": len(labelled) / len(records) if records else 0.0,
        "label_accuracy": _mean([bool(r.matches_gold) for r in judged_labelled]),
        "mean_vote_share": _mean([r.share for r in labelled]),
        "majority_accuracy": _mean([bool(r.matches_gold) for r in with_gold]),
        "by_share": {
            name: {"n": len(values), "accuracy": sum(values) / len(values)}
            for name, values in sorted(buckets.items())
        },
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
