"""The one rule for a good response, applied alike to teacher and student responses.

Verifiable prompts: a response is good when its extracted answer equals the prompt's majority answer and the prompt
is labelled (its vote was strong enough). Open-ended prompts: when the judge's score is at least
``labeling.judge_good_score``.
"""

from __future__ import annotations

from collections.abc import Callable

from rd_pipeline.config import LabelingConfig


def is_good_response(
    labeling: LabelingConfig,
    *,
    score: float | None = None,
    answer: str | None = None,
    majority: str | None = None,
    equal: Callable[[str, str], bool] | None = None,
) -> bool:
    """Whether a response earns a good label.

    Given ``equal`` (the benchmark's answer comparison), the response is verifiable: good when its ``answer`` is
    equal to the prompt's ``majority`` answer, which is None for a prompt the vote left unlabelled. Otherwise it is
    judged: good when it has a ``score`` of at least ``labeling.judge_good_score``.
    """
    if equal is None:
        return score is not None and score >= labeling.judge_good_score
    return majority is not None and answer is not None and bool(equal(answer, majority))
