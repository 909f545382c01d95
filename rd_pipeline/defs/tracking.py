"""Experiment tracking: each trained model version is one MLflow run, opened through dagster-mlflow.

After a model asset's step (``sft_student``, ``reward_model``, ``rl_student``) its run gets the stage's config as
params, the per-step metrics and validation curve its worker wrote, and the checkpoint's ``lineage.json`` as an
artifact; it is tagged with the Dagster run id (dagster-mlflow's ``dagster_run_id``), asset, partition and data
version, and the run's id goes back into the materialization metadata and ``lineage.json``. ``eval_scores`` logs
its scores to the runs of the checkpoints it scored. A materialization that reuses a checkpoint with a run in the
same store points to that run instead of logging another. Off unless ``tracking.mlflow.enabled``; mlflow and
dagster-mlflow (the ``tracking`` extra) are imported only then.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.steps.checkpoints import read_lineage
from rd_pipeline.steps.context import StepContext, StepResult
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.tracking import (
    MetricPoint,
    model_tracking,
    record_model_tracking,
    scored_models,
    training_metric_points,
    training_params,
)

# What a step's result adds to its materialization metadata once the step is done (see ``run_step``).
AfterStep = Callable[[StepContext, StepResult], dict[str, Any]]
METRICS_PER_REQUEST = 1000  # MLflow's log_batch limit
SQLITE_PREFIX = "sqlite:///"
MISSING_EXTRA = "tracking.mlflow.enabled needs mlflow and dagster-mlflow: pip install 'rd-pipeline[tracking]'"


class ExperimentTracking(dg.ConfigurableResource):
    """MLflow runs of the trained models, as the pipeline config's ``tracking.mlflow`` section sets them up
    (default off); used by the model assets and ``eval_scores``."""

    def after_training(self, context: dg.AssetExecutionContext, pipeline: PipelineResource) -> AfterStep:
        """What logs a model asset's step as an MLflow run and returns the run for its metadata."""
        config = pipeline.pipeline_config()
        _check_installed(config)
        return lambda step_context, result: _guarded(context, config, _log_training, result)

    def after_evaluation(self, context: dg.AssetExecutionContext, pipeline: PipelineResource) -> AfterStep:
        """What logs an ``eval_scores`` partition's scores to the runs of the models it scored."""
        config = pipeline.pipeline_config()
        _check_installed(config)
        return lambda step_context, result: _guarded(context, config, _log_scores, step_context)


def _check_installed(config: PipelineConfig) -> None:
    """Fail before the step runs when tracking is on without mlflow and dagster-mlflow installed."""
    if not config.tracking.mlflow.enabled:
        return
    try:
        # dagster-mlflow is marked beta; the notice means nothing to rd's users
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=dg.BetaWarning)
            import dagster_mlflow  # noqa: F401
        import mlflow  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"{MISSING_EXTRA} ({error})") from None


def _guarded(
    context: dg.AssetExecutionContext, config: PipelineConfig, log: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """``log``'s metadata when tracking is on; a tracker that fails is a warning (the step's data is already
    committed, and a re-materialization logs the run), reported in the metadata as ``mlflow_error``."""
    if not config.tracking.mlflow.enabled:
        return {}
    try:
        return log(context, config, *args)
    except Exception as error:  # the tracker is down or refuses: the step's own work stands
        message = f"{type(error).__name__}: {error}"
        context.log.warning(f"MLflow tracking failed, nothing more is logged for this step: {message}")
        return {"mlflow_error": message}


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database (MLflow's default would be ./mlruns in the working
    directory); a server chooses its own."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return (Path(uri.removeprefix(SQLITE_PREFIX)).resolve().parent / "artifacts").as_uri()


def _experiment(config: PipelineConfig) -> tuple[str, str, Any]:
    """(tracking URI, experiment id, client) of the configured experiment, created on first use."""
    from mlflow import MlflowClient

    uri = config.tracking.mlflow_uri(config.rd_home())
    if uri.startswith(SQLITE_PREFIX):
        Path(uri.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    name = config.tracking.mlflow.experiment_name
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return uri, experiment.experiment_id, client
    try:
        return uri, client.create_experiment(name, artifact_location=_artifact_location(uri)), client
    except Exception:  # another step (a parallel partition) created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return uri, experiment.experiment_id, client


def _live_run(client: Any, run_id: str | None) -> bool:
    """Whether ``run_id`` is a run of this store that was not deleted."""
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # MlflowException: no such run in this store
        return False


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of a tracking server; None for a local store (``mlflow ui
    --backend-store-uri URI`` shows it)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _run_metadata(tracking: dict[str, Any]) -> dict[str, Any]:
    metadata = {
        "mlflow_run_id": tracking["run_id"],
        "mlflow_experiment_id": tracking["experiment_id"],
        "mlflow_tracking_uri": tracking["tracking_uri"],
    }
    return metadata | ({"mlflow_run_url": tracking["run_url"]} if tracking.get("run_url") else {})


def _log_points(client: Any, run_id: str, points: Sequence[MetricPoint]) -> None:
    """Log metric points in batches of MLflow's request limit."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(point.key, point.value, now, point.step) for point in points]
    for start in range(0, len(metrics), METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_REQUEST])


@contextmanager
def _dagster_mlflow(
    context: dg.AssetExecutionContext, config: PipelineConfig, uri: str, run_id: str, tags: dict[str, str]
) -> Iterator[Any]:
    """dagster-mlflow's ``mlflow_tracking`` resource for this step, on ``run_id`` as the active run: it
    tags the run with the Dagster run id and ``tags``. The run is ended (FAILED on an error) on the way out."""
    from dagster_mlflow import mlflow_tracking
    from mlflow.entities import RunStatus

    mlflow_config = {
        "experiment_name": config.tracking.mlflow.experiment_name,
        "mlflow_tracking_uri": uri,
        "mlflow_run_id": run_id,
        "extra_tags": tags,
    }
    with warnings.catch_warnings():  # dagster-mlflow is marked beta; the notice means nothing to rd's users
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        with dg.build_resources(
            {"mlflow": mlflow_tracking},
            instance=context.instance,
            resource_config={"mlflow": {"config": mlflow_config}},
            dagster_run=context.run,
            log_manager=context.log,
        ) as resources:
            mlf = resources.mlflow
            try:
                yield mlf
            except BaseException:
                mlf.end_run(status=RunStatus.to_string(RunStatus.FAILED))
                raise
            mlf.end_run()


def _training_tags(context: dg.AssetExecutionContext, result: StepResult, lineage: dict) -> dict[str, str]:
    """Tags that lead from the run back to Dagster and the checkpoint (dagster-mlflow adds ``dagster_run_id``)."""
    output = result.output
    assert isinstance(output, TrainedModel)
    tags = {
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.data_version": result.data_version,
        "dagster.job": context.run.job_name,
        "rd.checkpoint": output.path,
        "rd.config_hash": str(lineage.get("config_hash")),
        "rd.teacher_versions": ",".join(output.teacher_versions or []),
    }
    return tags | ({"dagster.partition": context.partition_key} if context.has_partition_key else {})


def _log_training(context: dg.AssetExecutionContext, config: PipelineConfig, result: StepResult) -> dict:
    """Log a trained checkpoint as one MLflow run, or point to the run that already tracks it."""
    output = result.output
    assert isinstance(output, TrainedModel)
    asset, path = context.asset_key.to_user_string(), Path(output.path)
    uri, experiment_id, client = _experiment(config)
    existing = model_tracking(path)
    if existing.get("tracking_uri") == uri and _live_run(client, existing.get("run_id")):
        context.log.info(
            f"{asset}: checkpoint {result.data_version} is tracked by MLflow run {existing['run_id']}"
        )
        return _run_metadata(existing)
    lineage = read_lineage(path)
    name = f"{asset} {result.data_version}"
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    with _dagster_mlflow(context, config, uri, run_id, _training_tags(context, result, lineage)) as mlf:
        client.update_run(run_id, name=name)  # resuming the run gave it the job's name
        mlf.log_params(training_params(config, asset, lineage))
        _log_points(client, run_id, training_metric_points(output.metrics))
        tracking = {
            "run_id": run_id,
            "experiment_id": experiment_id,
            "experiment_name": config.tracking.mlflow.experiment_name,
            "tracking_uri": uri,
            "run_url": run_url(uri, experiment_id, run_id),
            "dagster_run_id": context.run.run_id,
        }
        mlf.log_artifact(str(record_model_tracking(path, tracking)))
    return _run_metadata(tracking)


def _log_scores(context: dg.AssetExecutionContext, config: PipelineConfig, step_context: StepContext) -> dict:
    """Log an eval_scores partition's scores of the SFT and RL students to their checkpoints' runs (values
    a run already holds are not logged twice), tagged with the Dagster run that scored them."""
    benchmark = context.partition_key
    uri, _, client = _experiment(config)
    logged: dict[str, str] = {}
    for model in scored_models(step_context, benchmark):
        tracked = model_tracking(model.checkpoint)
        run_id = tracked.get("run_id") if tracked.get("tracking_uri") == uri else None
        if run_id is None or not _live_run(client, run_id):
            context.log.info(
                f"eval_scores[{benchmark}]: {model.asset} {model.version} has no MLflow run in {uri} (trained "
                f"before tracking was on?); re-materialize {model.asset} to log one"
            )
            continue
        held = client.get_run(run_id).data.metrics
        _log_points(client, run_id, [point for point in model.points if held.get(point.key) != point.value])
        client.set_tag(run_id, f"dagster.eval_scores.{benchmark}.run_id", context.run.run_id)
        logged[model.asset] = run_id
    return {"mlflow_scored_runs": logged} if logged else {}
