"""Keeping the graph current: a schedule observes the teacher; declarative automation re-makes what depends on it.

Every downstream asset carries ``ON_CHANGE``, Dagster's eager condition with benchmark_prompts left out of the
triggers: when the teacher's observed data version changes, teacher_responses is requested for every partition, and
each later asset once its inputs have been re-made. An unchanged teacher version requests nothing, and neither does
re-materializing the prompts (re-run the graph by hand for that; only new prompts are then generated).
"""

from __future__ import annotations

import dagster as dg

from rd_pipeline.config import PipelineConfig

OBSERVE_TEACHER_JOB = "observe_teacher"

ON_CHANGE = dg.AutomationCondition.eager().replace(
    "any_deps_updated",
    dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets("benchmark_prompts")),
)


def teacher_observation_schedule(config: PipelineConfig) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(OBSERVE_TEACHER_JOB, selection=dg.AssetSelection.assets("teacher"))
    running = (
        dg.DefaultScheduleStatus.RUNNING
        if config.automation.schedule_running
        else dg.DefaultScheduleStatus.STOPPED
    )
    return dg.ScheduleDefinition(
        name="observe_teacher_schedule",
        job=job,
        cron_schedule=config.automation.observe_teacher_cron,
        default_status=running,
        description="Observe the teacher's identity; a new version triggers re-labelling downstream.",
    )


automation_sensor = dg.AutomationConditionSensorDefinition(
    "rd_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materializes assets whose inputs changed (a new teacher version, new labels, ...).",
)
