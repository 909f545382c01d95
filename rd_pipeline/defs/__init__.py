"""The Dagster layer: assets, resources and the Definitions object. The only package that imports dagster.

Nothing here reads a config at import: ``build_definitions`` builds the graph (its partitions, GPU tags and
schedule) from the config its resource resolves.
"""

from __future__ import annotations

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.data import data_assets, teacher
from rd_pipeline.defs.assets.evaluation import evaluation_assets
from rd_pipeline.defs.assets.trained import model_assets
from rd_pipeline.defs.automation import automation_sensor, teacher_observation_schedule
from rd_pipeline.defs.partitions import benchmark_partitions
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.tracking import ExperimentTracking

__all__ = [
    "ExperimentTracking",
    "PipelineResource",
    "build_assets",
    "build_definitions",
    "resources_for",
    "teacher",
]


def build_assets(config: PipelineConfig) -> list[dg.AssetsDefinition]:
    """Every asset of the graph, partitioned by ``config``'s benchmarks, its GPU tags sized by ``config``."""
    partitions = benchmark_partitions(config)
    return [
        teacher,
        *data_assets(partitions, config),
        *model_assets(partitions, config),
        *evaluation_assets(partitions, config),
    ]


def resources_for(pipeline: PipelineResource) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset may use: the pipeline config (``pipeline``) and experiment tracking."""
    return {"pipeline": pipeline, "tracking": ExperimentTracking()}


def build_definitions(pipeline: PipelineResource | None = None) -> dg.Definitions:
    """The Definitions for the config ``pipeline`` names (default: the environment's, read once now)."""
    pipeline = pipeline or PipelineResource.pinned()
    config = pipeline.pipeline_config()
    return dg.Definitions(
        assets=build_assets(config),
        resources=resources_for(pipeline),
        schedules=[teacher_observation_schedule(config)],
        sensors=[automation_sensor],
    )
