"""sft_student, student_responses and rl_student."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rd_pipeline.config import PipelineConfig, versioned_dump
from rd_pipeline.evaluation.metrics import training_phase, wilson_interval
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.checkpoints import latest_checkpoint, train_once
from rd_pipeline.steps.checks import (
    AssetCheck,
    CheckDetails,
    evaluation_only_benchmarks,
    not_empty,
    samples_match,
)
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash, teacher_versions_of
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.steps.results import SampledResponses, TrainedModel, evaluation_only_fields
from rd_pipeline.steps.rl_data import reference_responses, rollout_table_rows
from rd_pipeline.steps.teacher import (
    generate_rows,
    generation_metadata,
    response_rows,
    sampling_requests,
    usage_row,
)
from rd_pipeline.steps.validation import agreement_change, held_out_of_sft, split_prompts, validation_rows

if TYPE_CHECKING:
    from rd_pipeline.training.launch import JobKind


def upstream_partitions(ctx: StepContext, asset: str) -> dict[str, dict[str, Any]]:
    """The latest version record of every configured benchmark partition of ``asset``."""
    return {name: ctx.upstream_version(asset, name) for name in ctx.config.benchmark_names}


def _partitions_lineage(
    upstream_asset: str, records: dict[str, dict[str, Any]], **others: dict[str, Any]
) -> StepLineage:
    """Lineage of a model trained on every partition of ``upstream_asset`` (and on ``others``, keyed by asset)."""
    keyed = {f"{upstream_asset}[{name}]": record for name, record in records.items()} | others
    return StepLineage.of(_teacher_versions(records.values()), keyed)


def _teacher_versions(records: Iterable[dict[str, Any]]) -> list[str]:
    """Every teacher version behind the upstream version records, sorted."""
    return sorted({version for record in records for version in teacher_versions_of(record)})


def _skipped_benchmarks(ctx: StepContext) -> dict[str, Any]:
    """The benchmarks a model asset had nothing to train on, because they have no train prompts by configuration
    (their partitions are empty, and eval_scores still evaluates them)."""
    names = evaluation_only_benchmarks(ctx.config)
    return {"evaluation_only_benchmarks": ", ".join(names)} if names else {}


def _train_checkpoint(
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


def reporting_settings(ctx: StepContext, asset: str, version: str) -> dict[str, Any]:
    """The trainer's ``report_to`` (``tracking.report_to``) and, with TensorBoard, where its event files go:
    ``RD_HOME/tensorboard/<asset>/<version>``."""
    report_to = list(ctx.config.tracking.report_to)
    settings: dict[str, Any] = {"report_to": report_to}
    if "tensorboard" in report_to:
        settings["tensorboard_dir"] = str(ctx.rd_home / "tensorboard" / asset / version)
    return settings


def _sft_examples(ctx: StepContext, benchmark: str, held_out: set[str]) -> list[dict[str, Any]]:
    """The teacher's good responses to one benchmark's train prompts, except the ``held_out`` prompt ids (SFT's
    validation prompts), as SFT examples, each text once per prompt."""
    prompts = {
        row["prompt_id"]: row["prompt"]
        for row in read_prompts(ctx, benchmark, "train")
        if row["prompt_id"] not in held_out
    }
    good = {
        (r["prompt_id"], r["temperature"], r["sample_index"])
        for r in ctx.store.read("pseudo_labels", benchmark)
        if r["good"]
    }
    examples: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for row in ctx.store.read("teacher_responses", benchmark):
        key = (row["prompt_id"], row["response"])
        sample = (row["prompt_id"], row["temperature"], row["sample_index"])
        if row["prompt_id"] in prompts and sample in good and key not in seen:
            seen.add(key)
            examples.append(
                {
                    "prompt": [{"role": "user", "content": prompts[row["prompt_id"]]}],
                    "completion": [{"role": "assistant", "content": row["response"]}],
                }
            )
    return examples


def _against_start(validation: dict[str, Any], start: str, passes: Callable[[dict], bool]) -> CheckDetails:
    """A check of the shipped model's validation agreement against the model its stage started from (step 0,
    named ``start``; see ``agreement_change``): passes with a note when no agreement was measured."""
    change = agreement_change(validation, start)
    if change["difference"] is None:
        return True, change | {"note": "no validation agreement measured (no labelled validation prompts)"}
    return passes(change), {k: _rounded(v) for k, v in change.items()}


def _sft_improves(result: TrainedModel, _: PipelineConfig) -> CheckDetails:
    """Warns when the shipped SFT student's validation agreement with the vote labels is not above the base
    student's (step 0), e.g. when the base student itself shipped."""
    return _against_start(result.metrics.get("validation") or {}, "base", lambda c: c["difference"] > 0)


def _sft_not_worse(result: TrainedModel, _: PipelineConfig) -> CheckDetails:
    """Fails when the shipped SFT student agrees with the validation prompts' vote labels less than the base
    student did, by more than the 95% interval of the difference."""
    return _against_start(
        result.metrics.get("validation") or {}, "base", lambda c: c["difference_ci_high"] >= 0
    )


SFT_STUDENT_CHECKS = (
    AssetCheck(
        "sft_improves",
        False,
        "the shipped SFT student's validation agreement with the vote labels is above the base student's; a "
        "warning only (ties ship the base student, step 0)",
        _sft_improves,
    ),
    AssetCheck(
        "sft_not_worse",
        True,
        "the shipped SFT student's validation agreement with the vote labels is not below the base student's by "
        "more than the 95% interval of the difference",
        _sft_not_worse,
    ),
)


def _shipped(validation: dict[str, Any], steps: int | None) -> str:
    """Which weights ship, in words: the base student, a step and its third of training, or the last step."""
    selected = validation.get("selected_step")
    if selected == 0:
        return "base student (step 0): SFT did not improve validation agreement"
    if selected is None:
        return f"last step, not selected ({validation.get('note', 'no validation score')})"
    return f"step {selected} of {steps} trained ({training_phase(selected, steps)} third)"


def _unscored_benchmarks(validation: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmarks whose validation prompts have no vote label to agree with (open-ended ones): decoded, but
    left out of selection."""
    labelled = {record["benchmark"] for record in validation if record["vote_answer"] is not None}
    names = sorted({record["benchmark"] for record in validation} - labelled)
    if not names:
        return {}
    return {
        "validation_unscored": f"{', '.join(names)}: no vote labels (open-ended, or none labelled); their "
        "validation prompts are decoded but not scored, and do not take part in selection"
    }


@committed("sft_student", checks=SFT_STUDENT_CHECKS)
def make_sft_student(ctx: StepContext) -> StepResult:
    """Fine-tune the base student on the teacher's good responses of every benchmark, validated on training
    prompts held out of SFT (best checkpoint kept, the base student as step 0); fills ``sft_validation``."""
    config = ctx.config
    labels = upstream_partitions(ctx, "pseudo_labels")
    _, validation = split_prompts(ctx, "sft")
    held_out = held_out_of_sft(ctx)
    examples = [
        example
        for benchmark in config.benchmark_names
        for example in _sft_examples(ctx, benchmark, held_out.get(benchmark, set()))
    ]
    if not examples:
        raise RuntimeError(
            "sft_student: no teacher response earned a good label; nothing to train on "
            "(check pseudo_labels coverage, or lower labeling.min_vote_share; "
            f"{len(validation)} prompts are held out for validation by sft.validation_fraction)"
        )
    base = resolve_model(config.student.ref, ctx.rd_home, config.student.revision)
    version = content_hash(
        "sft",
        base.fingerprint,
        versioned_dump(config.sft),
        {name: record["data_version"] for name, record in labels.items()},
    )
    ctx.log(
        f"sft_student: {len(examples)} examples from {len(labels)} benchmarks, {len(validation)} prompts held "
        "out for validation"
    )
    lineage = _partitions_lineage("pseudo_labels", labels)
    path, metrics, trained = _train_checkpoint(
        ctx,
        "sft",
        "sft_student",
        version,
        {"base": base.location, "revision": base.revision},
        {"examples": examples, "validation": validation},
        lineage,
        config.student.ref,
    )
    curve = validation_rows("sft", version, metrics.get("validation") or {})
    for benchmark in config.benchmark_names:
        ctx.stage("sft_validation", benchmark, curve.get(benchmark, []), sft_version=version)
    return StepResult.of(
        version,
        TrainedModel(
            path=str(path),
            trained_now=trained,
            teacher_versions=lineage.teacher_versions,
            lineage=lineage.upstream,
            metrics=metrics,
            details={
                "examples": len(examples),
                "validation_prompts": len(validation),
                "shipped": _shipped(metrics.get("validation") or {}, metrics.get("steps")),
                **_unscored_benchmarks(validation),
                **_skipped_benchmarks(ctx),
            },
        ),
    )


def _complete_student_samples(result: SampledResponses, config: PipelineConfig) -> CheckDetails:
    return samples_match(result, config.student_sampling_settings())


STUDENT_RESPONSES_CHECKS = (
    AssetCheck("not_empty", True, "the student answered", not_empty),
    AssetCheck(
        "complete",
        True,
        "every prompt has student_sampling.n samples at each of its temperatures",
        _complete_student_samples,
        always_blocking=True,
    ),
)


@committed("student_responses", checks=STUDENT_RESPONSES_CHECKS)
def make_student_responses(ctx: StepContext, benchmark: str) -> StepResult:
    prompts = read_prompts(ctx, benchmark, "train")
    path, sft = latest_checkpoint(ctx, "sft_student")
    sampling = ctx.config.student_sampling_settings()
    requests = sampling_requests(prompts, ctx.config, sampling)
    completions, stats, _ = generate_rows(
        ctx, ctx.config.student, requests, f"student_responses[{benchmark}]", location=str(path)
    )
    rows = response_rows(completions, benchmark, "student_version", sft["data_version"])
    ctx.stage("student_responses", benchmark, rows)
    ctx.record_usage(usage_row(ctx, "student_responses", benchmark, sft["data_version"], stats))
    data_version = content_hash(
        sft["data_version"],
        sampling.model_dump(mode="json"),
        [(r["prompt_id"], r["temperature"], r["sample_index"], r["response"]) for r in rows],
    )
    StepLineage.of(sft["teacher_version"], {"sft_student": sft}).record(
        ctx, "student_responses", benchmark, data_version
    )
    return StepResult.of(
        data_version,
        SampledResponses(
            rows=len(rows),
            prompts=len(prompts),
            budget_exhausted=stats.budget_exhausted,
            details={
                "student_version": sft["data_version"],
                "samples_per_prompt": sampling.n * len(sampling.temperatures),
                **generation_metadata(stats, completions),
            },
            **evaluation_only_fields(ctx.config.benchmark(benchmark), len(prompts)),
        ),
    )


def _training_pairs(ctx: StepContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every benchmark's reward pairs as conversations: (train pairs, held-out pairs)."""
    train_pairs: list[dict[str, Any]] = []
    heldout_pairs: list[dict[str, Any]] = []
    for benchmark in ctx.config.benchmark_names:
        for row in ctx.store.read("reward_pairs", benchmark):
            pair = {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
                "margin": row["margin"],
            }
            (train_pairs if row["split"] == "train" else heldout_pairs).append(pair)
    return train_pairs, heldout_pairs


def _reward_model_accuracy(result: TrainedModel, config: PipelineConfig) -> CheckDetails:
    """Passes when the 95% Wilson lower bound of the held-out pairwise accuracy exceeds the threshold."""
    accuracy, pairs = result.heldout_accuracy, result.heldout_pairs or 0
    threshold = config.checks.min_reward_model_accuracy
    lower = None
    if accuracy is not None and math.isfinite(accuracy) and pairs > 0:
        lower = wilson_interval(round(accuracy * pairs), pairs)[0]
    return lower is not None and lower > threshold, {
        "heldout_accuracy": accuracy,
        "heldout_pairs": pairs,
        "wilson_lower_95": None if lower is None else round(lower, 4),
        "lower_bound_must_exceed": threshold,
    }


REWARD_MODEL_CHECKS = (
    AssetCheck(
        "heldout_accuracy",
        True,
        "the 95% Wilson lower bound of held-out pairwise accuracy exceeds checks.min_reward_model_accuracy",
        _reward_model_accuracy,
    ),
)


@committed("reward_model", checks=REWARD_MODEL_CHECKS)
def make_reward_model(ctx: StepContext) -> StepResult:
    """Train the reward model (from the SFT student) on every benchmark's reward pairs."""
    config = ctx.config
    labels = upstream_partitions(ctx, "reward_labels")
    sft_path, sft = latest_checkpoint(ctx, "sft_student")
    train_pairs, heldout_pairs = _training_pairs(ctx)
    if not train_pairs:
        raise RuntimeError(
            "reward_model: reward_labels produced no training pairs (every prompt's responses were "
            "all good or all bad); sample more responses or more prompts"
        )
    version = content_hash(
        "rm",
        sft["data_version"],
        versioned_dump(config.reward_model),
        {name: record["data_version"] for name, record in labels.items()},
    )
    ctx.log(f"reward_model: {len(train_pairs)} train pairs, {len(heldout_pairs)} held out")
    lineage = _partitions_lineage("reward_labels", labels, sft_student=sft)
    path, metrics, trained = _train_checkpoint(
        ctx,
        "reward_model",
        "reward_model",
        version,
        {"base": str(sft_path)},
        {"train_pairs": train_pairs, "heldout_pairs": heldout_pairs},
        lineage,
        f"sft_student@{sft['data_version']}",
    )
    return StepResult.of(
        version,
        TrainedModel(
            path=str(path),
            trained_now=trained,
            heldout_pairs=len(heldout_pairs),
            lineage=lineage.upstream,
            metrics=metrics,
            details={"train_pairs": len(train_pairs), **_skipped_benchmarks(ctx)},
        ),
    )


def _reward_hacking(result: TrainedModel, config: PipelineConfig) -> CheckDetails:
    """Fails when the shipped RL student agrees with the validation prompts' vote labels less than the SFT student
    did, by more than the 95% interval of the difference; shows reward against agreement either way."""
    return _against_start(
        result.metrics.get("validation") or {}, "sft", lambda c: c["difference_ci_high"] >= 0
    )


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


RL_STUDENT_CHECKS = (
    AssetCheck(
        "reward_hacking",
        True,
        "the shipped RL student's validation agreement with the vote labels is not below the SFT student's by "
        "more than the 95% interval of the difference",
        _reward_hacking,
    ),
)


@committed("rl_student", checks=RL_STUDENT_CHECKS)
def make_rl_student(ctx: StepContext) -> StepResult:
    """RL of the SFT student against the configured rewards, validated on held-out training prompts; fills
    ``rl_validation`` (the curve) and ``rl_rollouts`` (what the policy sampled and how it was rewarded)."""
    config = ctx.config
    sft_path, sft = latest_checkpoint(ctx, "sft_student")
    rm_path, rm = latest_checkpoint(ctx, "reward_model")
    prompts, validation = split_prompts(ctx, "rl")
    reference = reference_responses(ctx)
    version = content_hash(
        "rl",
        sft["data_version"],
        rm["data_version"],
        versioned_dump(config.rl),
        [(p["prompt"][0]["content"], p["vote_answer"]) for p in prompts],
        [(p["prompt"][0]["content"], p["vote_answer"]) for p in validation],
        reference,
    )
    lineage = StepLineage.of(_teacher_versions([sft, rm]), {"sft_student": sft, "reward_model": rm})
    sources = ", ".join(f"{r.source} x{r.weight:g}" for r in config.rl.rewards)
    ctx.log(
        f"rl_student: {config.rl.algorithm} on {len(prompts)} prompts ({len(validation)} held out for "
        f"validation), rewards {sources}, reward_model {rm['data_version']}"
    )
    path, metrics, trained = _train_checkpoint(
        ctx,
        "rl",
        "rl_student",
        version,
        {"base": str(sft_path), "reward_model": str(rm_path)},
        {"prompts": prompts, "validation": validation, "reference": reference},
        lineage,
        f"sft_student@{sft['data_version']}",
    )
    curve = validation_rows("rl", version, metrics.get("validation") or {})
    rollouts = rollout_table_rows(version, path)
    for benchmark in config.benchmark_names:
        ctx.stage("rl_validation", benchmark, curve.get(benchmark, []), rl_version=version)
        ctx.stage("rl_rollouts", benchmark, rollouts.get(benchmark, []), rl_version=version)
    return StepResult.of(
        version,
        TrainedModel(
            path=str(path),
            trained_now=trained,
            teacher_versions=lineage.teacher_versions,
            lineage=lineage.upstream,
            metrics=metrics,
            details={
                "prompts": len(prompts),
                "validation_prompts": len(validation),
                "algorithm": config.rl.algorithm,
                "rewards": sources,
                "rl_rollouts_rows": sum(len(rows) for rows in rollouts.values()),
                **_skipped_benchmarks(ctx),
            },
        ),
    )
