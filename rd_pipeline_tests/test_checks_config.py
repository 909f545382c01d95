"""Every ChecksConfig field changes the outcome of some asset check: none is configured but never read."""

from __future__ import annotations

import pytest

from rd_pipeline.config import ChecksConfig, parse_config
from rd_pipeline.steps.check_registry import CHECKS, evaluate_checks

# One step result with every metric the checks read, each between the lowest and highest threshold.
MIDDLING_METADATA = {
    "rows": 4,
    "prompts": 1,
    "coverage": 0.4,
    "mean_vote_share": 0.4,
    "gold_label_accuracy": 0.4,
    "n_labelled": 2,
    "heldout_accuracy": 0.4,
    "heldout_pairs": 5,
    "train_eval_overlaps": {},
    "worst_swap_consistency": 0.4,
    "worst_position_bias": 0.4,
    "worst_gold_agreement": 0.4,
    "worst_length_bias": 0.4,
}
BASE = {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}}


def _outcomes(checks: dict) -> list[tuple[str, str, bool, bool]]:
    config = parse_config({**BASE, "checks": checks})
    return [
        (outcome.asset, outcome.name, outcome.passed, outcome.refuses_commit)
        for asset in CHECKS
        for outcome in evaluate_checks(asset, MIDDLING_METADATA, config)
    ]


def _threshold_settings(value: float) -> dict[str, float]:
    return {name: value for name, field in ChecksConfig.model_fields.items() if field.annotation is float}


@pytest.mark.parametrize("name", sorted(ChecksConfig.model_fields))
def test_every_checks_field_changes_some_check_outcome(name: str) -> None:
    annotation = ChecksConfig.model_fields[name].annotation
    if annotation is float:
        # every other threshold lets everything through, so only this one can make a check fail
        lenient = _threshold_settings(0.0)
        changed = _outcomes(lenient) != _outcomes({**lenient, name: 1.0})
    elif annotation is bool:
        # every threshold fails everything, so only this switch decides whether failures block
        strict = _threshold_settings(1.0)
        changed = _outcomes({**strict, name: True}) != _outcomes({**strict, name: False})
    else:
        pytest.fail(f"checks.{name}: no probe for a {annotation} field; add one to this test")
    assert changed, f"checks.{name} is read by no asset check (see rd_pipeline/steps/check_registry.py)"
