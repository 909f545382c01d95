"""The gold_label_accuracy check on pseudo_labels: compared with checks.min_gold_label_accuracy, and blocking."""

from __future__ import annotations

import pytest

from rd_pipeline.config import parse_config
from rd_pipeline.steps.check_registry import evaluate_checks

LABELS = {"rows": 48, "coverage": 1.0, "mean_vote_share": 0.8, "n_labelled": 8}


def _gold_check(accuracy: float | None, **checks: object):
    config = parse_config(
        {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}, "checks": checks}
    )
    outcomes = evaluate_checks("pseudo_labels", {**LABELS, "gold_label_accuracy": accuracy}, config)
    return next(o for o in outcomes if o.name == "gold_label_accuracy")


@pytest.mark.parametrize(("accuracy", "passed"), [(0.5, False), (0.59, False), (0.6, True), (0.9, True)])
def test_gold_label_accuracy_is_compared_with_the_configured_minimum(accuracy, passed):
    outcome = _gold_check(accuracy, min_gold_label_accuracy=0.6)
    assert outcome.passed is passed and outcome.blocking
    assert outcome.refuses_commit is (not passed)
    assert outcome.details["min_gold_label_accuracy"] == 0.6 and outcome.details["labelled_prompts"] == 8


def test_gold_label_accuracy_only_warns_when_checks_are_not_enforced():
    outcome = _gold_check(0.1, min_gold_label_accuracy=0.6, enforce=False)
    assert not outcome.passed and not outcome.refuses_commit


def test_open_ended_labels_have_no_gold_to_fail():
    assert _gold_check(None, min_gold_label_accuracy=0.9).passed


def test_dagster_declares_the_check_as_blocking():
    from rd_pipeline.defs.checks import check_specs

    specs = {spec.name: spec for spec in check_specs("pseudo_labels")}
    assert specs["gold_label_accuracy"].blocking
