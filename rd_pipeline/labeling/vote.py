"""Majority vote over a prompt's sampled answers, with answers grouped by equivalence."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VoteResult:
    """The vote on one prompt.

    ``answer`` is the majority answer (the first-seen member of the winning class) even when the prompt
    is not ``labelled``; ``share`` is its votes over the valid votes; ``n_valid`` counts answers that
    are not None, ``n_total`` all answers.
    """

    answer: str | None
    share: float
    n_valid: int
    labelled: bool
    n_total: int


def majority_vote(
    answers: Sequence[str | None],
    equal: Callable[[str, str], bool],
    min_share: float,
    min_valid: int,
) -> VoteResult:
    """The most common answer, comparing answers with ``equal`` rather than as strings.

    Each answer joins the first class whose first member it equals, in order of appearance. Ties between
    classes of the same size go to the class whose first member appeared earliest (so sample order,
    which is deterministic, decides). The prompt is labelled when at least ``min_valid`` answers are
    valid and the winning share is at least ``min_share``.
    """
    classes: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        for members in classes:
            if equal(members[0], answer):
                members.append(answer)
                break
        else:
            classes.append([answer])
    n_valid = sum(len(members) for members in classes)
    if not classes:
        return VoteResult(answer=None, share=0.0, n_valid=0, labelled=False, n_total=len(answers))
    best = max(classes, key=len)  # max keeps the first of equally large classes
    share = len(best) / n_valid
    labelled = n_valid >= min_valid and share >= min_share
    return VoteResult(answer=best[0], share=share, n_valid=n_valid, labelled=labelled, n_total=len(answers))
