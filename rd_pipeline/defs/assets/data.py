"""Benchmark prompts, the teacher, its responses and their labels."""

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.step_assets import StepAsset, step_assets
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.pseudo_labels import make_pseudo_labels
from rd_pipeline.steps.reward_labels import make_reward_labels
from rd_pipeline.steps.teacher import make_teacher_responses, teacher_version


@dg.observable_source_asset(
    group_name="teacher", description="The teacher model; its data version is its identity."
)
def teacher(context: dg.OpExecutionContext, pipeline: PipelineResource) -> dg.DataVersion:
    config = pipeline.pipeline_config()
    version = teacher_version(config)
    context.log.info(f"teacher {config.teacher.ref} ({config.teacher.backend}) has version {version}")
    return dg.DataVersion(version)


DATA_STEPS = (
    StepAsset(
        "benchmark_prompts",
        make_benchmark_prompts,
        "Each benchmark's train and eval items with the prompt sent to models (gold kept for scoring only).",
        group="data",
        kinds=frozenset({"duckdb"}),
        on_change=False,
    ),
    StepAsset(
        "teacher_responses",
        make_teacher_responses,
        "n teacher samples per training prompt at each configured temperature.",
        group="teacher",
        kinds=frozenset({"duckdb", "pytorch"}),
        deps=("benchmark_prompts", "teacher"),
        gpu=True,
    ),
    StepAsset(
        "pseudo_labels",
        make_pseudo_labels,
        "Majority-vote (verifiable) or judge (open-ended) labels of the teacher's responses.",
        group="labels",
        kinds=frozenset({"duckdb"}),
        deps=("teacher_responses",),
    ),
    StepAsset(
        "reward_labels",
        make_reward_labels,
        "Teacher and student responses labelled the same way, and the reward-model pairs built from them.",
        group="labels",
        kinds=frozenset({"duckdb"}),
        deps=("student_responses", "pseudo_labels"),
    ),
)


def data_assets(partitions: dg.PartitionsDefinition, config: PipelineConfig) -> list[dg.AssetsDefinition]:
    """The prompt and label assets, partitioned by ``partitions``, their GPU tags sized by ``config``."""
    return step_assets(DATA_STEPS, partitions, config)
