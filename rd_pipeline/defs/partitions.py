"""Benchmark partitions: one per configured benchmark."""

from __future__ import annotations

import dagster as dg

from rd_pipeline.config import PipelineConfig


def benchmark_partitions(config: PipelineConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(config.benchmark_names)
