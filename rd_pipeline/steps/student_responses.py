"""student_responses: the SFT student's own samples on the training prompts."""

from __future__ import annotations

from rd_pipeline.steps.check_registry import sampled_responses_checks
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.steps.teacher import (
    generate_rows,
    response_keys,
    response_rows,
    sampled_responses_output,
    sampling_requests,
    usage_row,
)

STUDENT_RESPONSES_CHECKS = sampled_responses_checks(
    "student",
    "every prompt has student_sampling.n samples at each of its temperatures",
    lambda config: config.student_sampling_settings(),
)


@committed("student_responses", checks=STUDENT_RESPONSES_CHECKS)
def make_student_responses(ctx: StepContext, benchmark: str) -> StepResult:
    prompts = read_prompts(ctx, benchmark, "train")
    path, sft = latest_checkpoint(ctx, "sft_student")
    sampling = ctx.config.student_sampling_settings()
    requests = sampling_requests(prompts, ctx.config, sampling)
    completions, stats, _ = generate_rows(
        ctx, ctx.config.student, requests, f"student_responses[{benchmark}]", location=str(path)
    )
    rows = response_rows(completions, benchmark, "student_version", sft["data_version"])
    ctx.stage("student_responses", benchmark, rows)
    ctx.record_usage(usage_row(ctx, "student_responses", benchmark, sft["data_version"], stats))
    data_version = content_hash(sft["data_version"], sampling.model_dump(mode="json"), response_keys(rows))
    StepLineage.of(sft["teacher_version"], {"sft_student": sft}).record(
        ctx, "student_responses", benchmark, data_version
    )
    details = {
        "student_version": sft["data_version"],
        "samples_per_prompt": sampling.n * len(sampling.temperatures),
    }
    output = sampled_responses_output(ctx, benchmark, len(prompts), stats, completions, details)
    return StepResult.of(data_version, output)
