"""Evaluation scores and the comparison report."""

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.materialization import OWNERS, run_step
from rd_pipeline.defs.automation import ON_CHANGE
from rd_pipeline.defs.checks import check_specs
from rd_pipeline.defs.gpus import gpu_op_tags
from rd_pipeline.defs.resources import PipelineResource
from rd_pipeline.defs.tracking import ExperimentTracking
from rd_pipeline.steps.eval_scores import make_eval_scores
from rd_pipeline.steps.judge_audit import make_judge_audit
from rd_pipeline.steps.report import make_report


def evaluation_assets(
    partitions: dg.PartitionsDefinition, config: PipelineConfig
) -> list[dg.AssetsDefinition]:
    """The evaluation assets, partitioned by ``partitions``, their tags sized by ``config``."""

    @dg.asset(
        partitions_def=partitions,
        deps=["rl_student", "sft_student", "reward_model", "benchmark_prompts", "teacher"],
        group_name="evaluation",
        kinds={"duckdb"},
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("eval_scores", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("eval_scores"),
    )
    def eval_scores(
        context: dg.AssetExecutionContext, pipeline: PipelineResource, tracking: ExperimentTracking
    ) -> dg.MaterializeResult:
        """Teacher, base, SFT and RL students on the eval subset: accuracy or (LC) win rate, with 95% intervals;
        with MLflow tracking on, the SFT and RL students' scores also go to their runs."""
        return run_step(context, pipeline, make_eval_scores, tracking.after_evaluation(context, pipeline))

    @dg.asset(
        partitions_def=partitions,
        deps=["teacher_responses"],
        group_name="evaluation",
        kinds={"duckdb"},
        owners=OWNERS,
        pool="gpu",
        op_tags=gpu_op_tags("judge_audit", config),
        automation_condition=ON_CHANGE,
        check_specs=check_specs("judge_audit", config),
    )
    def judge_audit(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Every judge (labelling, eval) on pairs of teacher responses: agreement with gold where it exists,
        swap consistency, position and length bias, and where its verdicts came from, with 95% intervals."""
        return run_step(context, pipeline, make_judge_audit)

    @dg.asset(
        deps=[eval_scores, judge_audit],
        group_name="evaluation",
        kinds={"markdown"},
        owners=OWNERS,
        automation_condition=ON_CHANGE,
    )
    def report(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """The comparison table and charts across benchmarks, written under RD_HOME/reports/."""
        return run_step(context, pipeline, make_report)

    return [eval_scores, judge_audit, report]
