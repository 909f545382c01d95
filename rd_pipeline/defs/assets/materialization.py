"""Turning a step's result into a Dagster materialization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from rd_pipeline.defs.checks import outcome_evaluations, outcome_results
from rd_pipeline.defs.gpus import placed
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.steps.commit import CommitRefused
from rd_pipeline.steps.context import StepContext, StepResult

OWNERS = ["team:rd-pipeline"]


def _metadata_value(key: str, value: Any) -> Any:
    if key in ("markdown",) and isinstance(value, str):
        return dg.MetadataValue.md(value)
    if key in ("table", "summary", "eval_keys") and isinstance(value, str):
        return dg.MetadataValue.md(f"```\n{value}\n```")
    if key == "path" and isinstance(value, str):
        return dg.MetadataValue.path(value)
    if key.endswith("_url") and isinstance(value, str):
        return dg.MetadataValue.url(value)
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


def run_step(
    context: dg.AssetExecutionContext,
    pipeline: PipelineResource,
    make: Callable[..., StepResult],
    after: Callable[[StepContext, StepResult], dict[str, Any]] | None = None,
) -> dg.MaterializeResult:
    """Run an asset's step (for the run's partition, if any) and report its data version, metadata and checks;
    ``after`` (such as experiment tracking) runs on the finished step and adds to its metadata.

    The step commits its rows only when its blocking checks pass (``rd_pipeline.steps.commit``); when they fail it
    stores nothing and this step fails with the reason, which stops downstream steps.
    """
    step_context = pipeline.step_context(context)
    partition = (context.partition_key,) if context.has_partition_key else ()
    try:
        with placed(context, step_context.config) as where:
            result = make(step_context, *partition)
    except CommitRefused as refused:
        for evaluation in outcome_evaluations(refused.outcomes, step_context.config):
            context.log_event(evaluation)
        raise dg.Failure(
            description=str(refused),
            metadata={f"check_{o.name}": dg.MetadataValue.json(o.details) for o in refused.refused},
            allow_retries=False,
        ) from None
    if where is not None:
        result.metadata["placement"] = where
    if after is not None:
        result.metadata.update(after(step_context, result))
    return dg.MaterializeResult(
        metadata={key: _metadata_value(key, value) for key, value in result.metadata.items()},
        data_version=dg.DataVersion(result.data_version),
        check_results=outcome_results(result.checks, step_context.config),
    )
