"""Turning a step's result into a Dagster materialization."""

from __future__ import annotations

from typing import Any

import dagster as dg

from rd_pipeline.steps.context import StepResult

OWNERS = ["team:rd-pipeline"]


def _metadata_value(key: str, value: Any) -> Any:
    if key in ("markdown",) and isinstance(value, str):
        return dg.MetadataValue.md(value)
    if key in ("table", "summary") and isinstance(value, str):
        return dg.MetadataValue.md(f"```\n{value}\n```")
    if key == "path" and isinstance(value, str):
        return dg.MetadataValue.path(value)
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


def materialize_result(result: StepResult) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={key: _metadata_value(key, value) for key, value in result.metadata.items()},
        data_version=dg.DataVersion(result.data_version),
    )
