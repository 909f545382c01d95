"""Model checkpoints under ``RD_HOME/models/<asset>/<version>/``, each with a ``lineage.json``.

A checkpoint directory appears only when complete (trained into a staging directory, then renamed), so a crash
mid-training leaves nothing that looks finished, and a re-run with the same inputs reuses the finished one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rd_pipeline.steps.context import StepContext

LINEAGE_FILE = "lineage.json"


def checkpoint_dir(ctx: StepContext, asset: str, version: str) -> Path:
    return ctx.rd_home / "models" / asset / version


def read_lineage(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / LINEAGE_FILE).read_text())


def latest_checkpoint(ctx: StepContext, asset: str) -> tuple[Path, dict[str, Any]]:
    """The directory and version record of an asset's latest checkpoint; a clear error if there is none."""
    record = ctx.upstream_version(asset)
    path = checkpoint_dir(ctx, asset, record["data_version"])
    if not (path / LINEAGE_FILE).is_file():
        raise RuntimeError(f"{asset} checkpoint {path} is missing; re-materialize {asset}")
    return path, record


def train_once(
    ctx: StepContext,
    asset: str,
    version: str,
    train: Callable[[Path], dict[str, Any]],
    lineage: dict[str, Any],
) -> tuple[Path, dict[str, Any], bool]:
    """Train into ``models/<asset>/<version>`` unless it already exists. Returns (path, metrics, trained_now)."""
    target = checkpoint_dir(ctx, asset, version)
    if (target / LINEAGE_FILE).is_file():
        ctx.log(f"{asset}: inputs unchanged, reusing checkpoint {target}")
        return target, read_lineage(target).get("metrics", {}), False
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    metrics = train(staging)
    record = {
        "asset": asset,
        "version": version,
        "run_id": ctx.run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **lineage,
        "metrics": metrics,
    }
    (staging / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    staging.rename(target)
    return target, metrics, True
