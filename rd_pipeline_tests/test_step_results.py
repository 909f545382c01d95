"""Typed step results: checks read their fields, metadata is made from them, and lineage is built once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rd_pipeline.config import parse_config
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult
from rd_pipeline.steps.results import (
    OUTPUT_TYPES,
    EvalScores,
    PseudoLabels,
    SampledResponses,
    TrainedModel,
    evaluation_only_fields,
)


def _config(tmp_path: Path | None = None, **checks: object):
    data: dict = {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}, "checks": checks}
    if tmp_path is not None:
        data["paths"] = {"rd_home": str(tmp_path)}
    return parse_config(data)


def _outcomes(asset: str, reported, config) -> dict[str, tuple[bool, bool]]:
    return {o.name: (o.passed, o.refuses_commit) for o in evaluate_checks(asset, reported, config)}


def test_a_budget_stop_is_a_typed_field_the_completeness_check_reads():
    config = _config()
    expected = config.sampling.n * len(config.sampling.temperatures) * 3
    short = SampledResponses(rows=expected - 1, prompts=3, budget_exhausted=True, details={"cost_usd": 0.1})
    outcomes = evaluate_checks("teacher_responses", short, config)
    complete = next(o for o in outcomes if o.name == "complete")
    assert not complete.passed and complete.refuses_commit
    assert complete.details == {"rows": expected - 1, "expected": expected, "budget_exhausted": True}
    full = SampledResponses(rows=expected, prompts=3)
    assert all(o.passed for o in evaluate_checks("teacher_responses", full, config))


@pytest.mark.parametrize(
    "output",
    [
        SampledResponses(rows=4, prompts=1, budget_exhausted=False, details={"teacher_version": "t1"}),
        PseudoLabels(rows=8, coverage=0.5, mean_vote_share=0.7, n_labelled=2, gold_label_accuracy=None),
        TrainedModel(path="/m", trained_now=True, heldout_pairs=6, metrics={"heldout_accuracy": 0.75}),
        EvalScores(eval_prompts=4, scores={"teacher_accuracy": 0.5, "base_student_accuracy": 0.25}),
    ],
)
def test_checks_agree_on_the_typed_result_and_its_metadata(output):
    config = _config(enforce=True)
    asset = {
        SampledResponses: "teacher_responses",
        PseudoLabels: "pseudo_labels",
        TrainedModel: "reward_model",
        EvalScores: "eval_scores",
    }[type(output)]
    metadata = output.to_metadata()
    assert OUTPUT_TYPES[asset].from_metadata(metadata).to_metadata() == metadata
    assert _outcomes(asset, output, config) == _outcomes(asset, metadata, config)


def test_metadata_shows_typed_fields_details_and_scalar_metrics():
    model = TrainedModel(
        path="/m",
        trained_now=False,
        heldout_pairs=3,
        lineage={"reward_labels[gsm8k]": {"data_version": "v"}},
        metrics={"heldout_accuracy": 0.8, "per_step": [1, 2], "curve": [0.1], "launch": {"processes": 1}},
        details={"train_pairs": 9},
    )
    metadata = model.to_metadata()
    assert model.heldout_accuracy == 0.8
    assert metadata["heldout_accuracy"] == 0.8 and metadata["per_step"] == [1, 2] and "curve" not in metadata
    assert (
        metadata["train_pairs"] == 9 and metadata["heldout_pairs"] == 3 and "teacher_versions" not in metadata
    )
    assert "metrics" not in metadata and "details" not in metadata


def test_an_evaluation_only_partition_reports_why_it_is_empty():
    config = _config(enforce=True)
    empty = PseudoLabels(
        rows=0, **evaluation_only_fields(config.benchmark("gsm8k").model_copy(update={"train_size": 0}), 0)
    )
    metadata = empty.to_metadata()
    assert (
        metadata["evaluation_only"] is True
        and metadata["train_prompts"] == 0
        and "evaluation-only" in metadata["note"]
    )
    assert all(o.passed for o in evaluate_checks("pseudo_labels", empty, config))
    assert "evaluation_only" not in PseudoLabels(rows=0).to_metadata()
    refused = {
        o.name for o in evaluate_checks("pseudo_labels", PseudoLabels(rows=0), config) if o.refuses_commit
    }
    assert refused == {"not_empty", "label_coverage"}


def test_step_result_of_a_typed_output_carries_it_for_the_checks():
    output = EvalScores(eval_prompts=2, scores={"teacher_accuracy": 1.0})
    result = StepResult.of("v1", output)
    assert result.reported is output and result.metadata == output.to_metadata()
    assert StepResult("v2", {"rows": 1}).reported == {"rows": 1}
    complete, drift = evaluate_checks("eval_scores", result.reported, _config())
    assert not complete.passed and "sft_student" in complete.details["missing_roles"]
    assert drift.name == "eval_drift" and drift.passed and drift.details == {"status": "not re-evaluated"}


def test_lineage_is_recorded_from_one_record(tmp_path: Path):
    ctx = StepContext(_config(tmp_path))
    upstream = {"data_version": "d1", "run_id": "r1", "teacher_version": "t2,t1"}
    lineage = StepLineage.of(upstream["teacher_version"], {"pseudo_labels": upstream}, inputs_key="k")
    lineage.record(ctx, "reward_labels", "gsm8k", "v9")
    record = ctx.store.latest_version("reward_labels", "gsm8k")
    assert record["teacher_version"] == "t2,t1" and record["data_version"] == "v9"
    assert json.loads(record["upstream"]) == {
        "pseudo_labels": {"data_version": "d1", "run_id": "r1", "teacher_versions": ["t1", "t2"]},
        "inputs_key": "k",
    }
    checkpoint = StepLineage.of(["t1"], {"sft_student": upstream}).checkpoint("base", "h")
    assert checkpoint == {
        "base_model": "base",
        "upstream": {"sft_student": {"data_version": "d1", "run_id": "r1", "teacher_versions": ["t1", "t2"]}},
        "teacher_versions": ["t1"],
        "config_hash": "h",
    }
