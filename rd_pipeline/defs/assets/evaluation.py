"""Evaluation scores and the comparison report."""

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs.assets.step_assets import StepAsset, step_assets
from rd_pipeline.defs.tracking import ExperimentTracking
from rd_pipeline.steps.eval_scores import make_eval_scores
from rd_pipeline.steps.judge_audit import make_judge_audit
from rd_pipeline.steps.report import make_report

EVALUATION_STEPS = (
    StepAsset(
        "eval_scores",
        make_eval_scores,
        "Teacher, base, SFT and RL students on the eval subset: accuracy or (LC) win rate, with 95% intervals;\n"
        "with MLflow tracking on, the SFT and RL students' scores also go to their runs.",
        group="evaluation",
        kinds=frozenset({"duckdb"}),
        deps=("rl_student", "sft_student", "reward_model", "benchmark_prompts", "teacher"),
        gpu=True,
        tracking=ExperimentTracking.after_evaluation,
    ),
    StepAsset(
        "judge_audit",
        make_judge_audit,
        "Every judge (labelling, eval) on pairs of teacher responses: agreement with gold where it exists,\n"
        "swap consistency, position and length bias, and where its verdicts came from, with 95% intervals.",
        group="evaluation",
        kinds=frozenset({"duckdb"}),
        deps=("teacher_responses",),
        gpu=True,
    ),
    StepAsset(
        "report",
        make_report,
        "The comparison table and charts across benchmarks, written under RD_HOME/reports/.",
        group="evaluation",
        kinds=frozenset({"markdown"}),
        deps=("eval_scores", "judge_audit"),
        partitioned=False,
    ),
)


def evaluation_assets(
    partitions: dg.PartitionsDefinition, config: PipelineConfig
) -> list[dg.AssetsDefinition]:
    """The evaluation assets, partitioned by ``partitions``, their tags sized by ``config``."""
    return step_assets(EVALUATION_STEPS, partitions, config)
