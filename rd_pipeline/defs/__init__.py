"""The Dagster layer: assets, resources and the Definitions object. The only package that imports dagster."""

from __future__ import annotations

import dagster as dg

from rd_pipeline.defs.assets.data import (
    benchmark_prompts,
    pseudo_labels,
    reward_labels,
    teacher,
    teacher_responses,
)
from rd_pipeline.defs.assets.evaluation import eval_scores, report
from rd_pipeline.defs.assets.models import reward_model, rl_student, sft_student, student_responses
from rd_pipeline.defs.resources import PipelineResource

ASSETS = [
    benchmark_prompts,
    teacher,
    teacher_responses,
    pseudo_labels,
    sft_student,
    student_responses,
    reward_labels,
    reward_model,
    rl_student,
    eval_scores,
    report,
]


def build_definitions(pipeline: PipelineResource | None = None) -> dg.Definitions:
    return dg.Definitions(assets=ASSETS, resources={"pipeline": pipeline or PipelineResource()})


defs = build_definitions()
