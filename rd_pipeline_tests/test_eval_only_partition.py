"""An evaluation-only benchmark (no train prompts by configuration) flows through the graph with checks enforced:
its training-data partitions are empty and say why, the model assets train on the other benchmarks, and it is
evaluated like any other. A partition that has train prompts and produced nothing still fails its checks."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from rd_pipeline.config import PRESETS_DIR, load_config
from rd_pipeline.defs import build_definitions
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import asset_names, materialize_graph, plan_runs
from rd_pipeline.steps.check_registry import (
    CHECKS,
    evaluate_checks,
    evaluation_only_benchmarks,
    evaluation_only_metadata,
)
from rd_pipeline.store import Store

ROOT = Path(__file__).resolve().parents[1]
TRAINING_DATA = ("teacher_responses", "pseudo_labels", "student_responses", "reward_labels")


def _eval_only_config(tmp_path: Path) -> Path:
    """The tiny preset on gsm8k (trained) and gsm_plus (evaluation-only, its default), checks enforced; the
    thresholds a random model cannot meet are lowered, the rest of the enforcement is as configured."""
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["benchmarks"] = [
        {"name": "gsm8k", "source": "builtin", "train_size": 8, "eval_size": 4},
        {"name": "gsm_plus", "source": "builtin", "eval_size": 4},
    ]
    data["labeling"]["heldout_fraction"] = 0.5  # held-out pairs for the reward model's check, from 8 prompts
    data["checks"] = {
        "enforce": True,
        "min_label_coverage": 0.0,
        "min_mean_vote_share": 0.0,
        "min_gold_label_accuracy": 0.0,
        "min_reward_model_accuracy": 0.0,
    }
    data["paths"] = {"rd_home": str(tmp_path / "rd_home")}
    path = tmp_path / "eval_only.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    assert records, f"no materialization of {asset}[{partition}]"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def test_eval_only_benchmark_flows_through_the_graph_with_checks_enforced(tmp_path, monkeypatch):
    config_path = _eval_only_config(tmp_path)
    config = load_config(config_path)
    assert config.checks.enforce and config.benchmark("gsm_plus").eval_only
    monkeypatch.setenv("RD_HOME", str(config.rd_home()))
    monkeypatch.setenv("RD_CONFIG", str(config_path))
    monkeypatch.delenv("RD_PRESET", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    results = materialize_graph(config, PipelineResource(config_file=str(config_path)), log_level="WARNING")

    failed = [event.message for r in results for event in r.get_step_failure_events()]
    assert all(r.success for r in results), f"steps failed: {failed}"
    definitions = build_definitions(PipelineResource(config_file=str(config_path)))
    planned = plan_runs(definitions, asset_names(definitions), config.benchmark_names)
    assert len(results) == len(planned), "the graph stopped early"
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    failed_checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in evaluations if not e.passed}
    # A random model's SFT cannot agree with the vote labels, so the base student ships, and a random judge fails
    # its audit: warnings only.
    judge_checks = {f"judge_audit:{check.name}" for check in CHECKS["judge_audit"]}
    assert evaluations and set(failed_checks) <= {"sft_student:sft_improves", *judge_checks}, sorted(
        failed_checks
    )
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in failed_checks.values())

    store = Store(config.rd_home() / "rd.duckdb")
    assert store.read("benchmark_prompts", "gsm_plus", split="train") == []
    assert len(store.read("benchmark_prompts", "gsm_plus", split="eval")) == 4
    for table in TRAINING_DATA:
        assert store.count(table, "gsm_plus") == 0, f"{table}[gsm_plus] has rows"
        assert store.count(table, "gsm8k") > 0, f"{table}[gsm8k] is empty"
    roles = {row["model_role"] for row in store.read("eval_scores", "gsm_plus")}
    assert roles == {"teacher", "base_student", "sft_student", "rl_student"}

    instance = dg.DagsterInstance.get()
    for asset in TRAINING_DATA:
        metadata = _latest_metadata(instance, asset, "gsm_plus")
        assert metadata["train_prompts"] == 0 and metadata["evaluation_only"] is True, asset
        assert "train_prompts: 0 (evaluation-only)" in metadata["note"], asset
        assert _latest_metadata(instance, asset, "gsm8k").get("evaluation_only") is not True, asset
    for asset in ("sft_student", "reward_model", "rl_student"):
        metadata = _latest_metadata(instance, asset)
        assert metadata["evaluation_only_benchmarks"] == "gsm_plus", asset
    assert _latest_metadata(instance, "eval_scores", "gsm_plus")["eval_prompts"] == 4
    assert _latest_metadata(instance, "judge_audit", "gsm_plus")["evaluation_only"] is True
    assert store.count("judge_audit", "gsm_plus") == 0 and store.count("judge_audit", "gsm8k") > 0


@pytest.mark.parametrize("asset", ["teacher_responses", "student_responses"])
def test_a_partition_with_train_prompts_and_no_rows_still_fails(asset):
    config = load_config(ROOT / "examples" / "gpu.yaml")
    assert config.checks.enforce
    no_rows = {"rows": 0, "prompts": 8, "train_prompts": 8}
    assert {o.name for o in evaluate_checks(asset, no_rows, config) if o.refuses_commit} == {
        "not_empty",
        "complete",
    }
    evaluation_only = {"rows": 0, "prompts": 0, "train_prompts": 0, "evaluation_only": True}
    assert all(o.passed for o in evaluate_checks(asset, evaluation_only, config))


def test_unlabelled_partition_with_train_prompts_still_fails_coverage():
    config = load_config(ROOT / "examples" / "gpu.yaml")
    empty = {"rows": 0, "coverage": 0.0, "train_prompts": 8}
    refused = {o.name for o in evaluate_checks("pseudo_labels", empty, config) if o.refuses_commit}
    assert refused == {"not_empty", "label_coverage"}
    evaluation_only = {"rows": 0, "coverage": 0.0, "train_prompts": 0, "evaluation_only": True}
    assert all(o.passed for o in evaluate_checks("pseudo_labels", evaluation_only, config))


def test_gpu_example_evaluates_gsm_plus_only_with_checks_enforced():
    config = load_config(ROOT / "examples" / "gpu.yaml")
    assert config.checks.enforce and evaluation_only_benchmarks(config) == ["gsm_plus"]
    assert evaluation_only_metadata(config.benchmark("gsm_plus"), 0)["evaluation_only"] is True
    assert evaluation_only_metadata(config.benchmark("gsm8k"), 0) == {}
