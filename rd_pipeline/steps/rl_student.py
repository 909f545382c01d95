"""rl_student: RL of the SFT student against the configured rewards, validated against the SFT student."""

from __future__ import annotations

from rd_pipeline.config import PipelineConfig, versioned_dump
from rd_pipeline.steps.check_registry import (
    AssetCheck,
    CheckDetails,
)
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.model_training import (
    against_start,
    skipped_benchmarks,
    train_checkpoint,
    trained_model_result,
    upstream_teacher_versions,
)
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.rl_data import reference_responses, rollout_table_rows
from rd_pipeline.steps.validation import (
    split_prompts,
    validation_rows,
)


def _reward_hacking(result: TrainedModel, config: PipelineConfig) -> CheckDetails:
    """Fails when the shipped RL student agrees with the validation prompts' vote labels less than the SFT student
    did, by more than the 95% interval of the difference; shows reward against agreement either way."""
    return against_start(
        result.metrics.get("validation") or {}, "sft", lambda c: c["difference_ci_high"] >= 0
    )


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
    lineage = StepLineage.of(upstream_teacher_versions([sft, rm]), {"sft_student": sft, "reward_model": rm})
    sources = ", ".join(f"{r.source} x{r.weight:g}" for r in config.rl.rewards)
    ctx.log(
        f"rl_student: {config.rl.algorithm} on {len(prompts)} prompts ({len(validation)} held out for "
        f"validation), rewards {sources}, reward_model {rm['data_version']}"
    )
    path, metrics, trained = train_checkpoint(
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
    details = {
        "prompts": len(prompts),
        "validation_prompts": len(validation),
        "algorithm": config.rl.algorithm,
        "rewards": sources,
        "rl_rollouts_rows": sum(len(rows) for rows in rollouts.values()),
        **skipped_benchmarks(ctx),
    }
    return trained_model_result(version, path, trained, lineage, metrics, details)
