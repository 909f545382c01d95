"""The trained models: SFT student, its samples, the reward model and the RL student."""

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.step_assets import StepAsset, step_assets
from rd_pipeline.defs.tracking import ExperimentTracking
from rd_pipeline.steps.reward_model import make_reward_model
from rd_pipeline.steps.rl_student import make_rl_student
from rd_pipeline.steps.sft_student import make_sft_student
from rd_pipeline.steps.student_responses import make_student_responses

MODEL_KINDS = frozenset({"pytorch", "huggingface"})


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


# A trained model: one checkpoint for the whole graph (not partitioned), trained on a GPU through Pipes and
# tracked as a training run.
_trained_model = partial(
    StepAsset,
    group="models",
    kinds=MODEL_KINDS,
    partitioned=False,
    gpu=True,
    tracking=ExperimentTracking.after_training,
    wrap=with_pipes_training,
)

MODEL_STEPS = (
    _trained_model(
        "sft_student",
        make_sft_student,
        "The student after SFT on the teacher's well-labelled responses (TRL SFTTrainer), validated on held-out\n"
        "training prompts (best checkpoint kept, base student as step 0); fills sft_validation.",
        deps=("pseudo_labels",),
    ),
    StepAsset(
        "student_responses",
        make_student_responses,
        "The SFT student's own samples on the training prompts, so the reward model sees its distribution.",
        group="models",
        kinds=frozenset({"duckdb", "pytorch"}),
        deps=("sft_student", "benchmark_prompts"),
        gpu=True,
    ),
    _trained_model(
        "reward_model",
        make_reward_model,
        "A Bradley-Terry reward model on labelled teacher and student pairs (TRL RewardTrainer).",
        deps=("reward_labels", "sft_student"),
    ),
    _trained_model(
        "rl_student",
        make_rl_student,
        "The SFT student refined by GRPO or RLOO against the configured rewards, validated on held-out\n"
        "training prompts (best checkpoint kept, SFT student as step 0); fills rl_validation and rl_rollouts.",
        deps=("sft_student", "reward_model"),
    ),
)


def model_assets(partitions: dg.PartitionsDefinition, config: PipelineConfig) -> list[dg.AssetsDefinition]:
    """The model assets, partitioned by ``partitions``, their GPU tags sized by ``config``."""
    return step_assets(MODEL_STEPS, partitions, config)
