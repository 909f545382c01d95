"""reward_model: a Bradley-Terry reward model on every benchmark's reward pairs, checked on held-out pairs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rd_pipeline.config import PipelineConfig, versioned_dump
from rd_pipeline.evaluation.metrics import wilson_interval
from rd_pipeline.steps.check_registry import (
    AssetCheck,
    CheckDetails,
)
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepResult, content_hash
from rd_pipeline.steps.results import TrainedModel

if TYPE_CHECKING:
    pass
from rd_pipeline.steps.model_training import (
    partitions_lineage,
    skipped_benchmarks,
    train_checkpoint,
    upstream_partitions,
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
    lineage = partitions_lineage("reward_labels", labels, sft_student=sft)
    path, metrics, trained = train_checkpoint(
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
            details={"train_pairs": len(train_pairs), **skipped_benchmarks(ctx)},
        ),
    )
