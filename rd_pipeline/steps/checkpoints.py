"""Model checkpoints under ``RD_HOME/models/<asset>/<version>/``, each with a ``lineage.json``.

A checkpoint directory appears only when complete (trained into a staging directory, then renamed), so a crash
mid-training leaves nothing that looks finished, and a re-run with the same inputs reuses the finished one.
``lineage.json`` records the size and sha256 of every file; a checkpoint is verified before it is reused or read,
so damaged weights are trained again (by the asset that makes them) or fail naming the file, never used.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rd_pipeline.hashing import file_sha256
from rd_pipeline.steps.context import StepContext

LINEAGE_FILE = "lineage.json"


def checkpoint_dir(ctx: StepContext, asset: str, version: str) -> Path:
    return ctx.rd_home / "models" / asset / version


def read_lineage(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / LINEAGE_FILE).read_text())


def file_digests(path: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": hex}}`` of every file in a checkpoint except its lineage."""
    root = Path(path)
    return {
        file.relative_to(root).as_posix(): {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
        for file in sorted(root.rglob("*"))
        if file.is_file() and file.name != LINEAGE_FILE
    }


def _safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file is truncated or malformed (its header names every tensor's byte range), or None."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > size - 8:
                return f"{file.name} is truncated ({size} bytes, header alone says {header_length + 8})"
            header = json.loads(handle.read(header_length))
    except (struct.error, ValueError) as error:
        return f"{file.name} has no readable safetensors header ({error})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_length + end:
        return f"{file.name} is {size} bytes where its header says {8 + header_length + end}"
    return None


_VERIFIED: dict[tuple[str, tuple[tuple[str, int, int], ...]], bool] = {}


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a finished checkpoint (a missing, resized or changed file), or None when it is intact.

    Checkpoints recorded with file digests are hashed in full (once per process while the files stay unchanged);
    older ones, without digests, have their safetensors files checked against their headers.
    """
    path = Path(path)
    try:
        recorded = read_lineage(path).get("files")
    except (OSError, ValueError) as error:
        return f"{LINEAGE_FILE} is unreadable ({error})"
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.name != LINEAGE_FILE)
    stamp = (str(path.resolve()), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if _VERIFIED.get(stamp):
        return None
    if recorded is None:
        problem = next(
            filter(None, (_safetensors_problem(f) for f in files if f.suffix == ".safetensors")), None
        )
    else:
        problem = _digest_problem(path, recorded)
    if problem is None:
        _VERIFIED[stamp] = True
    return problem


def _digest_problem(path: Path, recorded: dict[str, dict[str, Any]]) -> str | None:
    for name, expected in sorted(recorded.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != expected["bytes"]:
            return f"{name} is {size} bytes, {expected['bytes']} when it was written"
        if file_sha256(file) != expected["sha256"]:
            return f"{name} does not match the sha256 recorded when it was written"
    return None


def latest_checkpoint(ctx: StepContext, asset: str) -> tuple[Path, dict[str, Any]]:
    """The directory and version record of an asset's latest checkpoint; a clear error if it is missing or
    damaged."""
    record = ctx.upstream_version(asset)
    path = checkpoint_dir(ctx, asset, record["data_version"])
    if not (path / LINEAGE_FILE).is_file():
        raise RuntimeError(f"{asset} checkpoint {path} is missing; re-materialize {asset}")
    problem = checkpoint_problem(path)
    if problem:
        raise RuntimeError(
            f"{asset} checkpoint {path} is damaged: {problem}; re-materialize {asset} to train it again"
        )
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
        problem = checkpoint_problem(target)
        if problem is None:
            ctx.log(f"{asset}: inputs unchanged, reusing checkpoint {target}")
            return target, read_lineage(target).get("metrics", {}), False
        damaged = target.with_name(target.name + ".damaged")
        shutil.rmtree(damaged, ignore_errors=True)
        target.rename(damaged)
        ctx.log(
            f"WARNING {asset}: checkpoint {target} is damaged ({problem}); moved to {damaged}, training again"
        )
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
        "files": file_digests(staging),
    }
    (staging / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    staging.rename(target)
    return target, metrics, True
