"""The one resource every asset uses: the pipeline config and a step context built from the run."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from rd_pipeline.config import PipelineConfig, resolve_config
from rd_pipeline.steps.context import StepContext

# A run tag: "true" makes eval_scores re-evaluate an unchanged key and compare (`rd materialize --refresh`).
REFRESH_TAG = "rd/refresh"

_RESOLVED: dict[tuple[str | None, str | None, int], PipelineConfig] = {}


def _file_stamp(config_file: str | None) -> int:
    """The config file's modification time, so an edited file is read again; 0 for a preset."""
    if config_file is None:
        return 0
    try:
        return os.stat(config_file).st_mtime_ns
    except OSError:
        return -1  # resolve_config names the missing file


class PipelineResource(dg.ConfigurableResource):
    """Which config to run: a YAML file or a preset (default: $RD_CONFIG, $RD_PRESET, else `tiny`).

    The config is resolved once per file or preset and process; Dagster's copies of the resource share it.
    """

    config_file: str | None = None
    preset: str | None = None

    @classmethod
    def pinned(cls, config_file: str | None = None, preset: str | None = None) -> PipelineResource:
        """A resource naming its config explicitly (an absolute file or a preset), the environment's defaults
        ($RD_CONFIG, $RD_PRESET, else `tiny`) read now rather than at each use."""
        if config_file is None and preset is None:
            config_file = os.environ.get("RD_CONFIG") or None
            preset = None if config_file else (os.environ.get("RD_PRESET") or "tiny")
        if config_file is not None:
            config_file = str(Path(config_file).resolve())
        return cls(config_file=config_file, preset=preset)

    def pipeline_config(self) -> PipelineConfig:
        """The resolved config (a fresh resolution only when the file changed since the last one)."""
        if self.config_file is None and self.preset is None:
            return self.pinned().pipeline_config()
        key = (self.config_file, self.preset, _file_stamp(self.config_file))
        if key not in _RESOLVED:
            _RESOLVED[key] = resolve_config(self.config_file, self.preset)
        return _RESOLVED[key]

    def step_context(self, context: dg.AssetExecutionContext | dg.OpExecutionContext) -> StepContext:
        return StepContext(
            self.pipeline_config(),
            run_id=context.run.run_id,
            log=context.log.info,
            refresh=context.run.tags.get(REFRESH_TAG) == "true",
        )
