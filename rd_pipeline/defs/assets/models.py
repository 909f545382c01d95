"""The trained models: SFT student, its samples, the reward model and the RL student."""

import dagster as dg

from rd_pipeline.defs.assets.common import OWNERS, run_step
from rd_pipeline.defs.automation import ON_CHANGE
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.defs.partitions import BENCHMARK_PARTITIONS
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.steps.students import (
    make_reward_model,
    make_rl_student,
    make_sft_student,
    make_student_responses,
)

MODEL_KINDS = {"pytorch", "huggingface"}


@dg.asset(
    deps=["pseudo_labels"],
    group_name="models",
    kinds=MODEL_KINDS,
    owners=OWNERS,
    pool="gpu",
    automation_condition=ON_CHANGE,
)
def sft_student(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """The student after SFT on the teacher's well-labelled responses (TRL SFTTrainer)."""
    return run_step(context, pipeline, make_sft_student)


@dg.asset(
    partitions_def=BENCHMARK_PARTITIONS,
    deps=[sft_student, "benchmark_prompts"],
    group_name="models",
    kinds={"duckdb", "pytorch"},
    owners=OWNERS,
    pool="gpu",
    automation_condition=ON_CHANGE,
    check_specs=check_specs("student_responses"),
)
def student_responses(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """The SFT student's own samples on the training prompts, so the reward model sees its distribution."""
    return run_step(context, pipeline, make_student_responses)


@dg.asset(
    deps=["reward_labels", sft_student],
    group_name="models",
    kinds=MODEL_KINDS,
    owners=OWNERS,
    pool="gpu",
    automation_condition=ON_CHANGE,
    check_specs=check_specs("reward_model"),
)
def reward_model(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """A Bradley-Terry reward model on labelled teacher and student pairs (TRL RewardTrainer)."""
    return run_step(context, pipeline, make_reward_model)


@dg.asset(
    deps=[sft_student, reward_model],
    group_name="models",
    kinds=MODEL_KINDS,
    owners=OWNERS,
    pool="gpu",
    automation_condition=ON_CHANGE,
)
def rl_student(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """The SFT student refined by GRPO or RLOO against the reward model."""
    return run_step(context, pipeline, make_rl_student)
