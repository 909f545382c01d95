"""What experiment tracking records of a model asset, read from its step's result, checkpoint and tables.

Plain data (names, values, steps); the Dagster layer (``rd_pipeline.defs.tracking``) sends it to MLflow after the
step: a training run is logged from the metrics its worker wrote (``result.json``, kept in ``lineage.json``), not
from inside the trainer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_pipeline.config import PipelineConfig
from rd_pipeline.steps.checkpoints import LINEAGE_FILE, checkpoint_dir, read_lineage
from rd_pipeline.steps.context import StepContext

# The config section each model asset trains with.
TRAINING_SECTIONS = {"sft_student": "sft", "reward_model": "reward_model", "rl_student": "rl"}
# The trained models eval_scores scores (the teacher and base student have no run of their own).
SCORED_MODEL_ASSETS = ("sft_student", "rl_student")
TRACKING_KEY = "tracking"  # the key of lineage.json that names the model's MLflow run
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-./ ]")


@dataclass(frozen=True)
class MetricPoint:
    """One value of a metric at a training step (0 for values that belong to the whole run)."""

    key: str
    value: float
    step: int = 0


def metric_name(*parts: str) -> str:
    """A metric name MLflow accepts: the parts joined by ``/``, other characters replaced by ``_``."""
    return _METRIC_NAME.sub("_", "/".join(parts))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings flattened to ``prefix.key.subkey`` names."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
    return flat


def training_params(config: PipelineConfig, asset: str, lineage: dict[str, Any]) -> dict[str, str]:
    """The stage's config section as flat parameters (``sft.learning_rate``, ``sft.lora.r``, ...), with the
    seed, the model training started from and the section's config hash."""
    section = TRAINING_SECTIONS[asset]
    dump = _flat(getattr(config, section).model_dump(mode="json"), section)
    dump |= {
        "seed": config.sampling.seed,
        "student": config.student.ref,
        "base_model": lineage.get("base_model"),
        "config_hash": lineage.get("config_hash"),
    }
    return {
        key: (value if isinstance(value, str) else json.dumps(value))[:MAX_PARAM_LENGTH]
        for key, value in dump.items()
    }


def training_metric_points(metrics: dict[str, Any]) -> list[MetricPoint]:
    """Every value a training run reported: per-step trainer logs as ``train/<key>`` at their step, each
    validation point (agreement, reward, KL, length, ..., per benchmark too) as ``validation/<key>`` at its
    step, and the run's scalar results (train_loss, heldout_accuracy, selected_step, ...) at step 0."""
    points = [
        MetricPoint(metric_name("train", key), value, int(row["step"]))
        for row in metrics.get("per_step") or []
        for key, raw in row.items()
        if key != "step" and (value := _finite(raw)) is not None
    ]
    validation = metrics.get("validation") if isinstance(metrics.get("validation"), dict) else {}
    for row in validation.get("curve") or []:
        for key, raw in _flat({k: v for k, v in row.items() if k != "step"}, "").items():
            if (value := _finite(raw)) is not None:
                points.append(
                    MetricPoint(metric_name("validation", *key.split(".")), value, int(row["step"]))
                )
    for key in ("selected_step", "stopped_early_at"):
        if (value := _finite(validation.get(key))) is not None:
            points.append(MetricPoint(metric_name("validation", key), value))
    points += [
        MetricPoint(metric_name(key), value)
        for key, raw in metrics.items()
        if (value := _finite(raw)) is not None
    ]
    return points


def model_tracking(path: Path) -> dict[str, Any]:
    """The MLflow run a checkpoint's ``lineage.json`` names (``{}`` when none)."""
    try:
        return dict(read_lineage(path).get(TRACKING_KEY) or {})
    except (OSError, ValueError):
        return {}


def record_model_tracking(path: Path, tracking: dict[str, Any]) -> Path:
    """Write the MLflow run that tracks a checkpoint into its ``lineage.json`` (replaced atomically; the
    checkpoint's file digests leave this file out). Returns the file."""
    lineage = read_lineage(path) | {TRACKING_KEY: tracking}
    target = Path(path) / LINEAGE_FILE
    staging = target.with_name(LINEAGE_FILE + ".partial")
    staging.write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
    staging.rename(target)
    return target


@dataclass(frozen=True)
class ScoredModel:
    """A trained model eval_scores scored on one benchmark: its checkpoint and the scores as metric points."""

    asset: str
    version: str
    checkpoint: Path
    points: tuple[MetricPoint, ...]


def scored_models(ctx: StepContext, benchmark: str) -> list[ScoredModel]:
    """The SFT and RL checkpoints the stored ``eval_scores[benchmark]`` rows score, each with its scores as
    ``eval/<benchmark>/<metric>`` (and ``_ci_low`` / ``_ci_high``, the 95% interval)."""
    by_model: dict[tuple[str, str], list[MetricPoint]] = {}
    for row in ctx.store.read("eval_scores", benchmark):
        if row["model_role"] not in SCORED_MODEL_ASSETS:
            continue
        points = by_model.setdefault((row["model_role"], row["model_version"]), [])
        for suffix, column in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
            if (value := _finite(row.get(column))) is not None:
                points.append(MetricPoint(metric_name("eval", benchmark, row["metric"] + suffix), value))
    return [
        ScoredModel(asset, version, checkpoint_dir(ctx, asset, version), tuple(points))
        for (asset, version), points in sorted(by_model.items())
    ]
