"""Experiment tracking as a user switches it on: the tiny graph on gsm8k, then MLflow read back with its client.

First the graph up to sft_student runs with tracking off (the default) and must leave no trace of a tracker;
then the whole graph runs with ``tracking.mlflow.enabled`` (the default store under RD_HOME) and
``report_to: [tensorboard]``, and sft_student once more. The SFT checkpoint is reused on the second run, so it
gets its run then, from its lineage; the reward model and RL student train with tracking on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from rd_pipeline.config import PRESETS_DIR, ConfigError, load_config, parse_config
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.run import materialize_graph
from rd_pipeline.store import Store

mlflow = pytest.importorskip("mlflow")

MODEL_ASSETS = ("sft_student", "reward_model", "rl_student")
UP_TO_SFT = ["benchmark_prompts", "teacher_responses", "pseudo_labels", "sft_student"]


def _config_file(tmp_path: Path, name: str, tracking: dict[str, Any] | None) -> Path:
    """The tiny preset on gsm8k only, state in tmp_path/rd_home, with ``tracking`` if given."""
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["benchmarks"] = [data["benchmarks"][0]]
    # validation curves from 8 prompts (RL's share first, SFT's after it), half the reward pairs held out
    data["rl"]["validation_fraction"], data["sft"]["validation_fraction"] = 0.5, 0.25
    data["labeling"]["heldout_fraction"] = 0.5
    data["paths"] = {"rd_home": str(tmp_path / "rd_home")}
    if tracking is not None:
        data["tracking"] = tracking
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _materialize(path: Path, monkeypatch: pytest.MonkeyPatch, selection: list[str] | None = None) -> list:
    monkeypatch.setenv("RD_CONFIG", str(path))
    results = materialize_graph(
        load_config(path), PipelineResource(config_file=str(path)), selection=selection, log_level="WARNING"
    )
    failed = [event.message for result in results for event in result.get_step_failure_events()]
    assert results and all(result.success for result in results), f"steps failed: {failed}"
    return results


def _materializations(instance: dg.DagsterInstance, asset: str) -> list[dg.EventLogRecord]:
    """Every materialization of ``asset``, oldest first."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100, ascending=True).records
    assert records, f"no materialization of {asset}"
    return list(records)


def _metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    return {key: value.value for key, value in record.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def tracked_graph(tmp_path_factory: pytest.TempPathFactory):
    """(config, store, Dagster instance, MLflow client, experiment id, files found after the untracked run)."""
    tmp_path = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path)  # MLflow's defaults write to ./mlruns; none may appear here
        monkeypatch.setenv("RD_HOME", str(tmp_path / "rd_home"))
        monkeypatch.delenv("RD_PRESET", raising=False)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "rd_home" / "dagster"))  # restored afterwards
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        _materialize(_config_file(tmp_path, "untracked", None), monkeypatch, UP_TO_SFT)
        untracked_files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        tracked = _config_file(
            tmp_path, "tracked", {"mlflow": {"enabled": True}, "report_to": ["tensorboard"]}
        )
        _materialize(tracked, monkeypatch)
        _materialize(tracked, monkeypatch, ["sft_student"])  # again: the checkpoint and its run are reused
        config = load_config(tracked)
        instance = dg.DagsterInstance.get()
        client = mlflow.MlflowClient(config.tracking.mlflow_uri(config.rd_home()))
        experiment = client.get_experiment_by_name(config.tracking.mlflow.experiment_name)
        assert experiment is not None, "no MLflow experiment was created"
        yield config, Store(config.rd_home() / "rd.duckdb"), instance, client, experiment, untracked_files
        instance.dispose()


def _runs_by_asset(client: Any, experiment: Any) -> dict[str, Any]:
    runs = client.search_runs([experiment.experiment_id])
    by_asset = {run.data.tags.get("dagster.asset_key"): run for run in runs}
    assert len(by_asset) == len(runs), f"more than one run per asset: {[r.info.run_name for r in runs]}"
    return by_asset


def test_tracking_off_writes_nothing(tracked_graph):
    config, store, instance, _, _, untracked_files = tracked_graph
    assert not [
        name for name in untracked_files if "mlflow" in name or "mlruns" in name or "tensorboard" in name
    ]
    first_sft = _materializations(instance, "sft_student")[0]
    assert not [key for key in _metadata(first_sft) if key.startswith("mlflow")]


def test_one_finished_run_per_trained_model_with_its_config_as_params(tracked_graph):
    config, _, _, client, experiment, _ = tracked_graph
    runs = _runs_by_asset(client, experiment)
    assert set(runs) == set(MODEL_ASSETS)
    assert experiment.artifact_location.startswith((config.rd_home() / "mlflow").as_uri())
    for asset, run in runs.items():
        assert run.info.status == "FINISHED", asset
        assert run.info.run_name == f"{asset} {run.data.tags['dagster.data_version']}"
    assert runs["sft_student"].data.params["sft.learning_rate"] == str(config.sft.learning_rate)
    assert runs["sft_student"].data.params["sft.lora.enabled"] == json.dumps(config.sft.lora.enabled)
    assert runs["reward_model"].data.params["reward_model.max_steps"] == str(config.reward_model.max_steps)
    assert runs["rl_student"].data.params["rl.algorithm"] == config.rl.algorithm
    assert runs["rl_student"].data.params["rl.num_generations"] == str(config.rl.num_generations)


def test_runs_are_tagged_with_the_dagster_run_asset_and_data_version_and_point_back(tracked_graph):
    """From the UI to the tracker (the run id in the materialization) and back (the Dagster run id tag)."""
    _, store, instance, client, experiment, _ = tracked_graph
    runs = _runs_by_asset(client, experiment)
    for asset in MODEL_ASSETS:
        run = runs[asset]
        tracked = [r for r in _materializations(instance, asset) if _metadata(r).get("mlflow_run_id")]
        # sft_student: its second materialization logged the run, its third points to the same one
        assert tracked and {_metadata(r)["mlflow_run_id"] for r in tracked} == {run.info.run_id}, asset
        first = tracked[0]
        assert run.data.tags["dagster_run_id"] == first.run_id
        assert run.data.tags["dagster.data_version"] == store.latest_version(asset)["data_version"]
        assert (
            run.data.tags["dagster.data_version"] == first.asset_materialization.tags["dagster/data_version"]
        )
        assert "dagster.partition" not in run.data.tags  # the model assets are not partitioned
        assert _metadata(first)["mlflow_tracking_uri"] == client.tracking_uri
    assert len(_materializations(instance, "sft_student")) == 3


def test_per_step_training_and_validation_metrics_are_logged_with_their_steps(tracked_graph):
    config, _, _, client, experiment, _ = tracked_graph
    runs = _runs_by_asset(client, experiment)

    def steps(asset: str, key: str) -> list[int]:
        return sorted(m.step for m in client.get_metric_history(runs[asset].info.run_id, key))

    for asset, section in (("sft_student", config.sft), ("reward_model", config.reward_model)):
        assert steps(asset, "train/loss") == list(range(1, section.max_steps + 1)), asset
    assert steps("reward_model", "train/accuracy") == [1, 2]
    assert steps("rl_student", "train/reward") == [1, 2]
    assert steps("rl_student", "train/kl") == [1, 2]
    # validation every step, the starting model as step 0 (the random tiny models' answers carry no vote label
    # to agree with, so the curve holds lengths, rewards and KL but no agreement)
    assert steps("sft_student", "validation/mean_length") == [0, 1, 2]
    assert steps("rl_student", "validation/mean_reward") == [0, 1, 2]
    assert steps("rl_student", "validation/kl") == [0, 1, 2]
    assert steps("rl_student", "validation/benchmarks/gsm8k/mean_length") == [0, 1, 2]
    metrics = runs["reward_model"].data.metrics
    assert "train_loss" in metrics and "steps" in metrics
    for asset in MODEL_ASSETS:  # every scored validation point, at its step
        version = runs[asset].data.tags["dagster.data_version"]
        lineage = json.loads((config.rd_home() / "models" / asset / version / "lineage.json").read_text())
        curve = [p["step"] for p in lineage["metrics"]["validation"]["curve"] if p["score"] is not None]
        assert steps(asset, "validation/score") == sorted(curve), asset


def test_lineage_is_an_artifact_and_names_the_run(tracked_graph, tmp_path):
    config, store, _, client, experiment, _ = tracked_graph
    for asset, run in _runs_by_asset(client, experiment).items():
        run_id = run.info.run_id
        assert [a.path for a in client.list_artifacts(run_id)] == ["lineage.json"]
        logged = json.loads(
            Path(client.download_artifacts(run_id, "lineage.json", str(tmp_path))).read_text()
        )
        version = store.latest_version(asset)["data_version"]
        on_disk = json.loads((config.rd_home() / "models" / asset / version / "lineage.json").read_text())
        assert logged == on_disk
        assert logged["version"] == version and logged["files"]
        assert logged["tracking"]["run_id"] == run_id
        assert logged["tracking"]["dagster_run_id"] == run.data.tags["dagster_run_id"]


def test_eval_scores_are_logged_to_the_runs_of_the_models_they_score(tracked_graph):
    _, store, instance, client, experiment, _ = tracked_graph
    runs = _runs_by_asset(client, experiment)
    scores = [
        r for r in store.read("eval_scores", "gsm8k") if r["model_role"] in ("sft_student", "rl_student")
    ]
    assert {r["model_role"] for r in scores} == {"sft_student", "rl_student"}
    for row in scores:
        run = runs[row["model_role"]]
        assert row["model_version"] == run.data.tags["dagster.data_version"]
        metrics = run.data.metrics
        assert metrics[f"eval/gsm8k/{row['metric']}"] == pytest.approx(row["value"])
        assert metrics[f"eval/gsm8k/{row['metric']}_ci_low"] == pytest.approx(row["ci_low"])
    assert not [key for key in runs["reward_model"].data.metrics if key.startswith("eval/")]
    eval_record = _materializations(instance, "eval_scores")[-1]
    for asset in ("sft_student", "rl_student"):
        assert runs[asset].data.tags["dagster.eval_scores.gsm8k.run_id"] == eval_record.run_id
    eval_metadata = _metadata(eval_record)
    assert eval_metadata["mlflow_scored_runs"] == {
        asset: runs[asset].info.run_id for asset in ("sft_student", "rl_student")
    }


def test_report_to_tensorboard_reaches_the_trainers(tracked_graph):
    """The trainers that ran with report_to: [tensorboard] wrote event files where the config says."""
    config, store, _, _, _, _ = tracked_graph
    for asset in ("reward_model", "rl_student"):
        version = store.latest_version(asset)["data_version"]
        events = list((config.rd_home() / "tensorboard" / asset / version).rglob("events.out.tfevents.*"))
        assert events and all(event.stat().st_size > 0 for event in events), asset


def test_report_to_accepts_only_tensorboard_and_wandb():
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    with pytest.raises(
        ConfigError, match=r"tracking\.report_to\.0: Input should be 'tensorboard' or 'wandb'"
    ):
        parse_config(data | {"tracking": {"report_to": ["mlflow"]}})
    with pytest.raises(ConfigError, match="report_to lists an integration twice"):
        parse_config(data | {"tracking": {"report_to": ["wandb", "wandb"]}})
    config = parse_config(data | {"tracking": {"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}})
    assert not config.tracking.mlflow.enabled and config.tracking.report_to == []
    assert config.tracking.mlflow_uri(Path("/x")) == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("report_to", "expected"), [((), []), (("tensorboard", "wandb"), ["tensorboard", "wandb"])]
)
def test_report_to_is_passed_to_every_trainers_args(tmp_path, report_to, expected):
    """The stage's integrations reach each TRL config (none: an empty list, as TRL normalises "none")."""
    from trl import GRPOConfig, RewardConfig, SFTConfig

    from rd_pipeline.config import RewardModelConfig, RlConfig, SftConfig
    from rd_pipeline.training.precision import choose_precision
    from rd_pipeline.training.stage import Stage

    stages = ((SftConfig(), SFTConfig, {}), (RewardModelConfig(), RewardConfig, {}))
    stages += ((RlConfig(num_generations=2), GRPOConfig, {"num_generations": 2}),)
    for cfg, args_class, extra in stages:
        stage = Stage(cfg, "base", None, 0, (), choose_precision("no"), None, 0.0, "", report_to)
        args = args_class(**stage.trainer_args(str(tmp_path)), **extra)
        assert args.report_to == expected, args_class.__name__
