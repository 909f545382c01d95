"""Assets that run one pipeline step, each described once in a table row (``StepAsset``) and built from it."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.materialization import OWNERS, run_step
from rd_pipeline.defs.automation import ON_CHANGE
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.defs.gpus import gpu_op_tags
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.tracking import AfterStep, ExperimentTracking

# What wraps a step function for the asset's run (such as launching training through Pipes).
StepWrapper = Callable[[dg.AssetExecutionContext, Callable[..., Any]], Callable[..., Any]]
# The tracking hook of an asset: an ``ExperimentTracking`` method such as ``after_training``.
TrackingHook = Callable[[ExperimentTracking, dg.AssetExecutionContext, PipelineResource], AfterStep]


@dataclass(frozen=True)
class StepAsset:
    """One asset that runs a step: its name, step function (``steps.*.make_*``), description, group, kinds,
    upstream asset names, whether it is partitioned by benchmark, runs on a GPU (the ``gpu`` pool, tags sized
    by the config) and is materialized when its inputs change. ``tracking`` is the experiment-tracking hook
    its step's result goes through; ``wrap`` wraps the step function for the run. Its checks are the step's
    registered ones (``defs.checks``)."""

    name: str
    make: Callable[..., Any]
    description: str
    group: str
    kinds: frozenset[str]
    deps: tuple[str, ...] = ()
    partitioned: bool = True
    gpu: bool = False
    on_change: bool = True
    tracking: TrackingHook | None = None
    wrap: StepWrapper | None = None


def _step_function(step: StepAsset, context: dg.AssetExecutionContext) -> Callable[..., Any]:
    return step.make if step.wrap is None else step.wrap(context, step.make)


def _compute(step: StepAsset) -> Callable[..., dg.MaterializeResult]:
    """The asset's body; it asks for the ``tracking`` resource only when the step is tracked."""
    hook = step.tracking
    if hook is None:

        def run(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
            return run_step(context, pipeline, _step_function(step, context))

        return run

    def run_tracked(
        context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking
    ) -> dg.MaterializeResult:
        return run_step(context, pipeline, _step_function(step, context), hook(tracking, context, pipeline))

    return run_tracked


def step_asset(
    step: StepAsset, partitions: dg.PartitionsDefinition, config: PipelineConfig
) -> dg.AssetsDefinition:
    """The Dagster asset of ``step``, partitioned by ``partitions`` when it is partitioned, its GPU tags sized
    by ``config``."""
    return dg.asset(
        name=step.name,
        description=step.description,
        partitions_def=partitions if step.partitioned else None,
        deps=list(step.deps),
        group_name=step.group,
        kinds=set(step.kinds),
        owners=OWNERS,
        pool="gpu" if step.gpu else None,
        op_tags=gpu_op_tags(step.name, config) if step.gpu else None,
        automation_condition=ON_CHANGE if step.on_change else None,
        check_specs=check_specs(step.name, config),
    )(_compute(step))


def step_assets(
    steps: Sequence[StepAsset], partitions: dg.PartitionsDefinition, config: PipelineConfig
) -> list[dg.AssetsDefinition]:
    """The assets of ``steps``, in order (see ``step_asset``)."""
    return [step_asset(step, partitions, config) for step in steps]
