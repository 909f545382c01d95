"""Benchmark prompts, the teacher, its responses and their labels."""

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.materialization import OWNERS, run_step
from rd_pipeline.defs.automation import ON_CHANGE
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.defs.gpus import gpu_op_tags
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


def data_assets(partitions: dg.PartitionsDefinition, config: PipelineConfig) -> list[dg.AssetsDefinition]:
    """The prompt and label assets, partitioned by ``partitions``, their GPU tags sized by ``config``."""

    @dg.asset(
        partitions_def=partitions,
        group_name="data",
        kinds={"duckdb"},
        owners=OWNERS,
        check_specs=check_specs("benchmark_prompts"),
    )
    def benchmark_prompts(
        context: dg.AssetExecutionContext, pipeline: PipelineResource
    ) -> dg.MaterializeResult:
        """Each benchmark's train and eval items with the prompt sent to models (gold kept for scoring only)."""
        return run_step(context, pipeline, make_benchmark_prompts)

    @dg.asset(
        partitions_def=partitions,
        deps=[benchmark_prompts, teacher],
        group_name="teacher",
        kinds={"duckdb", "pytorch"},
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("teacher_responses", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("teacher_responses"),
    )
    def teacher_responses(
        context: dg.AssetExecutionContext, pipeline: PipelineResource
    ) -> dg.MaterializeResult:
        """n teacher samples per training prompt at each configured temperature."""
        return run_step(context, pipeline, make_teacher_responses)

    @dg.asset(
        partitions_def=partitions,
        deps=[teacher_responses],
        group_name="labels",
        kinds={"duckdb"},
        owners=OWNERS,
        automation_condition=ON_CHANGE,
        check_specs=check_specs("pseudo_labels"),
    )
    def pseudo_labels(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Majority-vote (verifiable) or judge (open-ended) labels of the teacher's responses."""
        return run_step(context, pipeline, make_pseudo_labels)

    @dg.asset(
        partitions_def=partitions,
        deps=["student_responses", pseudo_labels],
        group_name="labels",
        kinds={"duckdb"},
        owners=OWNERS,
        automation_condition=ON_CHANGE,
    )
    def reward_labels(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Teacher and student responses labelled the same way, and the reward-model pairs built from them."""
        return run_step(context, pipeline, make_reward_labels)

    return [benchmark_prompts, teacher_responses, pseudo_labels, reward_labels]
