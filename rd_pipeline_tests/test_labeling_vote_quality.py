"""Majority vote and label-quality measurement."""

from __future__ import annotations

import pytest

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.labeling.quality import LabelRecord, label_quality, label_record
from rd_pipeline.labeling.vote import VoteResult, majority_vote

GSM = get_benchmark("gsm8k")
MMLU = get_benchmark("mmlu_pro")


def test_equivalent_answers_vote_together():
    result = majority_vote(["18", "18.00", "$18", "17", None], GSM.answers_equal, min_share=0.5, min_valid=2)
    assert result == VoteResult(answer="18", share=0.75, n_valid=4, labelled=True, n_total=5)


def test_fractions_and_decimals_are_one_class():
    result = majority_vote(["0.5", "1/2", "3", "50%"], GSM.answers_equal, min_share=0.5, min_valid=1)
    assert result.answer == "0.5" and result.share == 0.75


def test_tie_goes_to_the_class_seen_first():
    first = majority_vote(["B", "A", "A", "B"], MMLU.answers_equal, min_share=0.0, min_valid=1)
    second = majority_vote(["A", "B", "B", "A"], MMLU.answers_equal, min_share=0.0, min_valid=1)
    assert (first.answer, first.share) == ("B", 0.5)
    assert (second.answer, second.share) == ("A", 0.5)


@pytest.mark.parametrize(
    ("answers", "min_share", "min_valid", "labelled"),
    [
        (["A", "A", "B", "C"], 0.5, 2, True),
        (["A", "A", "B", "C"], 0.6, 2, False),
        (["A", None, None, None], 0.5, 2, False),
        (["A", "A", None, None], 0.5, 2, True),
    ],
)
def test_thresholds(answers, min_share, min_valid, labelled):
    assert majority_vote(answers, MMLU.answers_equal, min_share, min_valid).labelled is labelled


def test_no_valid_answers():
    result = majority_vote([None, None], GSM.answers_equal, min_share=0.5, min_valid=1)
    assert result == VoteResult(answer=None, share=0.0, n_valid=0, labelled=False, n_total=2)


def test_label_quality_accuracy_coverage_and_buckets():
    votes = [
        ("p1", majority_vote(["18", "18", "18", "17"], GSM.answers_equal, 0.5, 2), "18"),  # share .75, right
        ("p2", majority_vote(["5", "5", "6", "6"], GSM.answers_equal, 0.6, 2), "6"),  # share .5, unlabelled
        ("p3", majority_vote(["9", "9", "9", "9"], GSM.answers_equal, 0.5, 2), "8"),  # share 1, wrong
        ("p4", majority_vote([None, None, None, None], GSM.answers_equal, 0.5, 2), "3"),  # no answer
        ("p5", majority_vote(["2", "2", "2", "2"], GSM.answers_equal, 0.5, 2), "2"),  # share 1, right
    ]
    records = [label_record(pid, vote, gold, GSM.answers_equal) for pid, vote, gold in votes]
    quality = label_quality(records)
    assert quality["n_prompts"] == 5 and quality["n_labelled"] == 3
    assert quality["coverage"] == pytest.approx(0.6)
    assert quality["label_accuracy"] == pytest.approx(2 / 3)
    assert quality["mean_vote_share"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert quality["majority_accuracy"] == pytest.approx(2 / 4)
    assert quality["by_share"] == {
        "0.5-0.6": {"n": 1, "accuracy": 0.0},
        "0.7-0.8": {"n": 1, "accuracy": 1.0},
        "0.9-1.0": {"n": 2, "accuracy": 0.5},
    }


def test_label_quality_without_gold_or_records():
    assert label_quality([])["label_accuracy"] is None
    quality = label_quality([LabelRecord("p", "A", 1.0, True, None)])
    assert quality["coverage"] == 1.0 and quality["label_accuracy"] is None and quality["by_share"] == {}
