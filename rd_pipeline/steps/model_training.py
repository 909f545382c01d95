"""What the model steps share: upstream partitions, lineage, training a checkpoint once, checks against step 0."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rd_pipeline.steps.check_registry import (
    CheckDetails,
    evaluation_only_benchmarks,
)
from rd_pipeline.steps.checkpoints import train_once
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, teacher_versions_of
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.validation import (
    agreement_change,
)

if TYPE_CHECKING:
    from rd_pipeline.training.launch import JobKind


def upstream_partitions(ctx: StepContext, asset: str) -> dict[str, dict[str, Any]]:
    """The latest version record of every configured benchmark partition of ``asset``."""
    return {name: ctx.upstream_version(asset, name) for name in ctx.config.benchmark_names}


def partitions_lineage(
    upstream_asset: str, records: dict[str, dict[str, Any]], **others: dict[str, Any]
) -> StepLineage:
    """Lineage of a model trained on every partition of ``upstream_asset`` (and on ``others``, keyed by asset)."""
    keyed = {f"{upstream_asset}[{name}]": record for name, record in records.items()} | others
    return StepLineage.of(upstream_teacher_versions(records.values()), keyed)


def upstream_teacher_versions(records: Iterable[dict[str, Any]]) -> list[str]:
    """Every teacher version behind the upstream version records, sorted."""
    return sorted({version for record in records for version in teacher_versions_of(record)})


def skipped_benchmarks(ctx: StepContext) -> dict[str, Any]:
    """The benchmarks a model asset had nothing to train on, because they have no train prompts by configuration
    (their partitions are empty, and eval_scores still evaluates them)."""
    names = evaluation_only_benchmarks(ctx.config)
    return {"evaluation_only_benchmarks": ", ".join(names)} if names else {}


def trained_model_result(
    version: str,
    path: Path,
    trained_now: bool,
    lineage: StepLineage,
    metrics: dict[str, Any],
    details: dict[str, Any],
) -> StepResult:
    """The result of a student step: checkpoint ``version`` at ``path``, its lineage and training metrics."""
    return StepResult.of(
        version,
        TrainedModel(
            path=str(path),
            trained_now=trained_now,
            teacher_versions=lineage.teacher_versions,
            lineage=lineage.upstream,
            metrics=metrics,
            details=details,
        ),
    )


def train_checkpoint(
    ctx: StepContext,
    kind: JobKind,
    asset: str,
    version: str,
    settings: dict[str, Any],
    records: dict[str, list[dict[str, Any]]],
    lineage: StepLineage,
    started_from: str,
) -> tuple[Path, dict[str, Any], bool]:
    """Train ``asset`` at ``version`` unless its checkpoint exists (see ``train_once``), then record its lineage.
    Returns (path, metrics, trained_now).

    Training runs in its own process group (``accelerate launch``) through the context's launcher: Dagster Pipes
    under Dagster, a plain subprocess otherwise; TRL and torch load only there. ``kind`` names the config section
    (``sft``, ``reward_model``, ``rl``) whose settings and launch the job gets; ``started_from`` is what the
    lineage names as the starting model."""
    from rd_pipeline.training.launch import prepare_job, run_training_job

    section = getattr(ctx.config, kind)
    job_settings = {
        "seed": ctx.config.sampling.seed,
        **settings,
        "config": section.model_dump(mode="json"),
        **reporting_settings(ctx, asset, version),
    }

    def train(out_dir: Path) -> dict[str, Any]:
        job_dir = ctx.rd_home / "jobs" / asset / version
        job = prepare_job(kind, job_dir, out_dir, section.launch, job_settings, records)
        launcher = ctx.launch_training or partial(run_training_job, log=ctx.log)
        metrics = launcher(job)
        shutil.rmtree(job_dir, ignore_errors=True)  # kept after a failure, for inspection
        return metrics

    checkpoint = lineage.checkpoint(started_from, ctx.config.section_hash(kind))
    path, metrics, trained = train_once(ctx, asset, version, train, checkpoint)
    lineage.record(ctx, asset, "", version)
    return path, metrics, trained


def against_start(
    validation: dict[str, Any],
    start: str,
    passes: Callable[[dict], bool],
    change_of: Callable[[dict[str, Any], str], dict[str, Any]] = agreement_change,
) -> CheckDetails:
    """A check of the shipped model's validation measure against the model its stage started from (step 0,
    named ``start``; see ``change_of``): passes with a note when nothing was measured."""
    change = change_of(validation, start)
    if change["difference"] is None:
        return True, change | {
            "note": "no validation agreement or win rate measured (no labelled or judged validation prompts)"
        }
    return passes(change), {k: rounded(v) for k, v in change.items()}


def rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def reporting_settings(ctx: StepContext, asset: str, version: str) -> dict[str, Any]:
    """The trainer's ``report_to`` (``tracking.report_to``) and, with TensorBoard, where its event files go:
    ``RD_HOME/tensorboard/<asset>/<version>``."""
    report_to = list(ctx.config.tracking.report_to)
    settings: dict[str, Any] = {"report_to": report_to}
    if "tensorboard" in report_to:
        settings["tensorboard_dir"] = str(ctx.rd_home / "tensorboard" / asset / version)
    return settings
