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
from rd_pipeline.defs.automation import automation_sensor, teacher_observation_schedule
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
    pipeline = pipeline or PipelineResource()
    return dg.Definitions(
        assets=ASSETS,
        resources={"pipeline": pipeline},
        schedules=[teacher_observation_schedule(pipeline.pipeline_config())],
        sensors=[automation_sensor],
    )


defs = build_definitions()
