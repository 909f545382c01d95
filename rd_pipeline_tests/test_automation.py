"""Declarative automation: a new teacher version re-makes everything downstream, an unchanged one nothing."""

from __future__ import annotations

import dagster as dg
import pytest

from rd_pipeline.defs import build_definitions
from rd_pipeline.defs.resources import PipelineResource

BENCHMARKS = ["alpaca_eval", "gsm8k", "gsm_plus", "mmlu_pro"]
PARTITIONED = [
    "benchmark_prompts",
    "teacher_responses",
    "pseudo_labels",
    "student_responses",
    "reward_labels",
    "eval_scores",
    "judge_audit",
]
UNPARTITIONED = ["sft_student", "reward_model", "rl_student", "report"]
DOWNSTREAM_OF_TEACHER = {(a, b) for a in PARTITIONED if a != "benchmark_prompts" for b in BENCHMARKS} | {
    (a, None) for a in UNPARTITIONED
}


@pytest.fixture
def defs() -> dg.Definitions:
    return build_definitions(PipelineResource(preset="tiny"))


def _observe_teacher(instance: dg.DagsterInstance, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetObservation(asset_key="teacher", tags={"dagster/data_version": version})
    )


def _materialize(instance: dg.DagsterInstance, asset: str, partition: str | None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def _requested_asset_partitions(result) -> set[tuple[str, str | None]]:
    found = set()
    for asset in PARTITIONED + UNPARTITIONED:
        for partition in result.get_requested_partitions(dg.AssetKey(asset)):
            found.add((asset, partition))
    return found


def _settled_instance(defs: dg.Definitions) -> tuple[dg.DagsterInstance, object]:
    """An instance on which the teacher was observed at v1 and every asset partition materialized after it."""
    instance = dg.DagsterInstance.ephemeral()
    _observe_teacher(instance, "v1")
    for asset in PARTITIONED:
        for benchmark in BENCHMARKS:
            _materialize(instance, asset, benchmark)
    for asset in UNPARTITIONED:
        _materialize(instance, asset, None)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    return instance, result.cursor


def test_unchanged_teacher_requests_nothing(defs):
    instance, cursor = _settled_instance(defs)
    for _ in range(3):
        _observe_teacher(instance, "v1")
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.total_requested == 0, _requested_asset_partitions(result)
        cursor = result.cursor


def test_new_teacher_version_requests_every_downstream_partition(defs):
    instance, cursor = _settled_instance(defs)
    _observe_teacher(instance, "v2")
    requested_overall: set[tuple[str, str | None]] = set()
    for _ in range(12):  # ticks: materialize what each tick requests, until nothing more is asked for
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        requested = _requested_asset_partitions(result)
        if not requested:
            break
        requested_overall |= requested
        for asset, partition in sorted(requested, key=str):
            _materialize(instance, asset, partition)
    assert {("teacher_responses", b) for b in BENCHMARKS} <= requested_overall
    assert requested_overall == DOWNSTREAM_OF_TEACHER
    # benchmark prompts do not depend on the teacher and are left alone
    assert not any(asset == "benchmark_prompts" for asset, _ in requested_overall)


def test_rematerialized_prompts_request_nothing(defs):
    instance, cursor = _settled_instance(defs)
    _materialize(instance, "benchmark_prompts", "gsm8k")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert result.total_requested == 0, _requested_asset_partitions(result)
