"""student_responses: the SFT student's own samples on the training prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rd_pipeline.config import PipelineConfig
from rd_pipeline.steps.check_registry import (
    AssetCheck,
    CheckDetails,
    not_empty,
    samples_match,
)
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.steps.results import SampledResponses, evaluation_only_fields
from rd_pipeline.steps.teacher import (
    generate_rows,
    generation_metadata,
    response_rows,
    sampling_requests,
    usage_row,
)

if TYPE_CHECKING:
    pass


def _complete_student_samples(result: SampledResponses, config: PipelineConfig) -> CheckDetails:
    return samples_match(result, config.student_sampling_settings())


STUDENT_RESPONSES_CHECKS = (
    AssetCheck("not_empty", True, "the student answered", not_empty),
    AssetCheck(
        "complete",
        True,
        "every prompt has student_sampling.n samples at each of its temperatures",
        _complete_student_samples,
        always_blocking=True,
    ),
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
    data_version = content_hash(
        sft["data_version"],
        sampling.model_dump(mode="json"),
        [(r["prompt_id"], r["temperature"], r["sample_index"], r["response"]) for r in rows],
    )
    StepLineage.of(sft["teacher_version"], {"sft_student": sft}).record(
        ctx, "student_responses", benchmark, data_version
    )
    return StepResult.of(
        data_version,
        SampledResponses(
            rows=len(rows),
            prompts=len(prompts),
            budget_exhausted=stats.budget_exhausted,
            details={
                "student_version": sft["data_version"],
                "samples_per_prompt": sampling.n * len(sampling.temperatures),
                **generation_metadata(stats, completions),
            },
            **evaluation_only_fields(ctx.config.benchmark(benchmark), len(prompts)),
        ),
    )
