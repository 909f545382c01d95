"""The one good-response rule, as pseudo_labels and reward_labels apply it to teacher and student responses."""

from __future__ import annotations

import pytest

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.config import LabelingConfig
from rd_pipeline.labeling.good import is_good_response

LABELING = LabelingConfig(judge_good_score=7.0)
EQUAL = get_benchmark("gsm8k").answers_equal


@pytest.mark.parametrize(
    ("answer", "majority", "good"),
    [
        ("18.00", "18", True),  # equal by value, not as strings
        ("17", "18", False),
        (None, "18", False),  # no extractable answer
        ("18", None, False),  # the prompt's vote was too weak to label it
    ],
)
def test_verifiable_response_is_good_when_it_matches_the_labelled_majority(answer, majority, good):
    assert is_good_response(LABELING, answer=answer, majority=majority, equal=EQUAL) is good


@pytest.mark.parametrize(("score", "good"), [(7.0, True), (9.5, True), (6.99, False), (None, False)])
def test_judged_response_is_good_at_or_above_the_threshold(score, good):
    assert is_good_response(LABELING, score=score) is good
