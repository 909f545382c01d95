"""The Dagster definitions, summed up in a checked-in snapshot: a change to the graph must be reviewed.

After an intended change, rewrite the snapshot with ``RD_UPDATE_SNAPSHOTS=1 pytest
rd_pipeline_tests/test_definitions_snapshot.py`` and review the diff of ``snapshots/definitions_tiny.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from rd_pipeline.defs import build_definitions
from rd_pipeline.defs.resources import PipelineResource

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions_tiny.json"
UPDATE_ENV = "RD_UPDATE_SNAPSHOTS"


def _asset_summary(asset: dg.AssetsDefinition, spec: dg.AssetSpec) -> dict[str, Any]:
    partitions = asset.partitions_def
    return {
        "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
        "materializable": asset.is_materializable,
        "observable": asset.is_observable,
        "partitions": partitions.get_partition_keys() if partitions is not None else None,
        "group": spec.group_name,
        "kinds": sorted(spec.kinds),
        "owners": sorted(spec.owners),
        "tags": dict(sorted(spec.tags.items())),
        "pool": asset.op.pool,
        "op_tags": json.loads(json.dumps(dict(sorted(asset.op.tags.items())), sort_keys=True)),
        "automation_condition": spec.automation_condition is not None,
        "checks": sorted(
            ({"name": check.name, "blocking": check.blocking} for check in asset.check_specs),
            key=lambda check: check["name"],
        ),
    }


def definitions_summary(definitions: dg.Definitions) -> dict[str, Any]:
    """What the graph is: every asset with its deps, partitions, checks, pool, tags and kinds; schedules; sensors."""
    assets = {
        spec.key.to_user_string(): _asset_summary(definitions.resolve_assets_def(spec.key), spec)
        for spec in definitions.resolve_all_asset_specs()
    }
    return {
        "assets": dict(sorted(assets.items())),
        "schedules": sorted(schedule.name for schedule in definitions.schedules or []),
        "sensors": sorted(sensor.name for sensor in definitions.sensors or []),
        "resources": sorted(definitions.resources or {}),
    }


def test_definitions_match_the_reviewed_snapshot():
    summary = definitions_summary(build_definitions(PipelineResource(preset="tiny")))
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    if os.environ.get(UPDATE_ENV):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.is_file(), f"no snapshot yet: run with {UPDATE_ENV}=1 to write {SNAPSHOT}"
    assert text == SNAPSHOT.read_text(), (
        f"the Dagster definitions changed; review the change and rewrite {SNAPSHOT.name} with {UPDATE_ENV}=1"
    )
