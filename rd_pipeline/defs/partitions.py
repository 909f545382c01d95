"""Benchmark partitions: one per configured benchmark."""

from __future__ import annotations

import dagster as dg

from rd_pipeline.config import resolve_config


def benchmark_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(resolve_config().benchmark_names)


BENCHMARK_PARTITIONS = benchmark_partitions()
