"""The one resource every asset uses: the pipeline config and a step context built from the run."""

from __future__ import annotations

import dagster as dg

from rd_pipeline.config import PipelineConfig, resolve_config
from rd_pipeline.steps.context import StepContext


class PipelineResource(dg.ConfigurableResource):
    """Which config to run (a YAML file or a preset; default: $RD_CONFIG, $RD_PRESET, else `tiny`)."""

    config_file: str | None = None
    preset: str | None = None

    def pipeline_config(self) -> PipelineConfig:
        return resolve_config(self.config_file, self.preset)

    def step_context(self, context: dg.AssetExecutionContext | dg.OpExecutionContext) -> StepContext:
        return StepContext(self.pipeline_config(), run_id=context.run.run_id, log=context.log.info)
