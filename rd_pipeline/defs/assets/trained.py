"""The trained models: SFT student, its samples, the reward model and the RL student."""

import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.materialization import OWNERS, run_step
from rd_pipeline.defs.automation import ON_CHANGE
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.defs.gpus import gpu_op_tags
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.tracking import ExperimentTracking
from rd_pipeline.steps.reward_model import make_reward_model
from rd_pipeline.steps.rl_student import make_rl_student
from rd_pipeline.steps.sft_student import make_sft_student
from rd_pipeline.steps.student_responses import make_student_responses

MODEL_KINDS = {"pytorch", "huggingface"}


def pipes_launcher(context: dg.AssetExecutionContext) -> Callable[[Any], dict[str, Any]]:
    """Launch a training job's ``accelerate launch`` group through Dagster Pipes: the main process streams its
    logs and per-step metrics to this run and reports its metrics and checkpoint path as a materialization.
    The metrics returned are those the worker wrote to its job directory (``read_result``), as without Pipes: a
    Pipes message can be lost on a loaded machine (a run's reward-model step once got no materialization
    report), the file cannot. A failed group raises the worker's own error. Dagster's notice that Pipes uses a
    preview API of its own is left out of the run output."""
    from rd_pipeline.training.launch import launch_command, read_result, training_failure

    def launch(job: Any) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=dg.PreviewWarning)
            try:
                dg.PipesSubprocessClient().run(
                    command=launch_command(job), context=context, extras={"job_dir": str(job.job_dir)}
                )
            except Exception as error:  # the group failed: say why, in the worker's words where it left them
                raise training_failure(job, detail=str(error)) from None
        return read_result(job)

    return launch


def with_pipes_training(context: dg.AssetExecutionContext, make: Callable[..., Any]) -> Callable[..., Any]:
    """``make`` with its step context set to launch training through Pipes."""

    def run(step_context: Any, *partition: str) -> Any:
        step_context.launch_training = pipes_launcher(context)
        return make(step_context, *partition)

    return run


def model_assets(partitions: dg.PartitionsDefinition, config: PipelineConfig) -> list[dg.AssetsDefinition]:
    """The model assets, partitioned by ``partitions``, their GPU tags sized by ``config``."""

    @dg.asset(
        deps=["pseudo_labels"],
        group_name="models",
        kinds=MODEL_KINDS,
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("sft_student", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("sft_student"),
    )
    def sft_student(
        context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking
    ) -> dg.MaterializeResult:
        """The student after SFT on the teacher's well-labelled responses (TRL SFTTrainer), validated on held-out
        training prompts (best checkpoint kept, base student as step 0); fills sft_validation."""
        training = with_pipes_training(context, make_sft_student)
        return run_step(context, pipeline, training, tracking.after_training(context, pipeline))

    @dg.asset(
        partitions_def=partitions,
        deps=[sft_student, "benchmark_prompts"],
        group_name="models",
        kinds={"duckdb", "pytorch"},
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("student_responses", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("student_responses"),
    )
    def student_responses(
        context: dg.AssetExecutionContext, pipeline: PipelineResource
    ) -> dg.MaterializeResult:
        """The SFT student's own samples on the training prompts, so the reward model sees its distribution."""
        return run_step(context, pipeline, make_student_responses)

    @dg.asset(
        deps=["reward_labels", sft_student],
        group_name="models",
        kinds=MODEL_KINDS,
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("reward_model", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("reward_model"),
    )
    def reward_model(
        context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking
    ) -> dg.MaterializeResult:
        """A Bradley-Terry reward model on labelled teacher and student pairs (TRL RewardTrainer)."""
        training = with_pipes_training(context, make_reward_model)
        return run_step(context, pipeline, training, tracking.after_training(context, pipeline))

    @dg.asset(
        deps=[sft_student, reward_model],
        group_name="models",
        kinds=MODEL_KINDS,
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("rl_student", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("rl_student"),
    )
    def rl_student(
        context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking
    ) -> dg.MaterializeResult:
        """The SFT student refined by GRPO or RLOO against the configured rewards, validated on held-out
        training prompts (best checkpoint kept, SFT student as step 0); fills rl_validation and rl_rollouts."""
        training = with_pipes_training(context, make_rl_student)
        return run_step(context, pipeline, training, tracking.after_training(context, pipeline))

    return [sft_student, student_responses, reward_model, rl_student]
