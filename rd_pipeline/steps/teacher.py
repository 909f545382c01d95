"""teacher (its version) and teacher_responses: n samples per training prompt at each temperature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rd_pipeline.config import ModelConfig, PipelineConfig, SamplingConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import (
    Completion,
    GenerationRequest,
    GenerationStats,
    Generator,
    SamplingParams,
)
from rd_pipeline.steps.check_registry import sampled_responses_checks
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.generation_guard import guarded_generation
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.steps.results import SampledResponses, evaluation_only_fields


def teacher_version(config: PipelineConfig, generator: Generator | None = None) -> str:
    """The teacher's identity: backend, model, revision or weights fingerprint, and its sampling settings."""
    own = generator is None
    generator = generator or make_generator(config.teacher, config.rd_home(), role="teacher")
    try:
        return version_from_identity(generator.observe_identity(), config)
    finally:
        if own:
            generator.close()


def version_from_identity(identity: dict[str, str], config: PipelineConfig) -> str:
    return content_hash(identity, config.sampling.model_dump(mode="json"))


def sampling_requests(
    prompts: Sequence[dict[str, Any]], config: PipelineConfig, sampling: SamplingConfig | None = None
) -> list[GenerationRequest]:
    """n samples per prompt at each temperature of ``sampling`` (default: the teacher's, ``config.sampling``)."""
    sampling = sampling or config.sampling
    return [
        GenerationRequest(
            request_id=row["prompt_id"],
            messages=({"role": "user", "content": row["prompt"]},),
            params=SamplingParams(
                temperature=temperature,
                n=sampling.n,
                max_new_tokens=sampling.max_new_tokens,
                top_p=sampling.top_p,
                seed=sampling.seed,
            ),
        )
        for row in prompts
        for temperature in sampling.temperatures
    ]


def generate_rows(
    ctx: StepContext,
    model: ModelConfig,
    requests: Sequence[GenerationRequest],
    label: str,
    location: str | None = None,
    journal_salt: str = "",
) -> tuple[list[Completion], GenerationStats, dict[str, str]]:
    """Run requests through a journaled generator with progress, then release the model.

    ``label`` (asset and partition) is the scope of the generation lock (see ``generation_guard``);
    ``journal_salt`` gives the samples journal keys of their own (see ``make_generator``).
    """
    generator = make_generator(model, ctx.rd_home, location=location, role=label, journal_salt=journal_salt)
    try:
        with guarded_generation(ctx, generator, label) as identity, ctx.progress(label) as progress:
            completions, stats = generator.generate(requests, progress=progress)
    finally:
        generator.close()
    if stats.budget_exhausted:
        ctx.log(
            f"{label}: stopped at the budget limit with {len(completions)}/{stats.samples_requested} samples; "
            "the rest are generated on a later run once the budget allows (raise api.max_budget_usd or run "
            "`rd budget reset`)"
        )
    return completions, stats, identity


def usage_row(
    ctx: StepContext, asset: str, benchmark: str, version: str, stats: GenerationStats
) -> dict[str, Any]:
    from datetime import datetime, timezone

    return {
        "benchmark": benchmark,
        "asset": asset,
        "run_id": ctx.run_id,
        "model_version": version,
        "samples_generated": stats.samples_generated,
        "samples_from_journal": stats.samples_from_journal,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "cost_usd": stats.cost_usd,
        "recorded_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }


def generation_metadata(stats: GenerationStats, completions: Sequence[Completion]) -> dict[str, Any]:
    mean_tokens = sum(c.output_tokens for c in completions) / len(completions) if completions else 0.0
    return {
        "samples_generated": stats.samples_generated,
        "samples_from_journal": stats.samples_from_journal,
        "generation_requests": stats.backend_requests,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "cost_usd": round(stats.cost_usd, 6),
        "mean_response_tokens": round(mean_tokens, 1),
        "budget_exhausted": stats.budget_exhausted,
    }


def response_rows(
    completions: Sequence[Completion], benchmark: str, version_column: str, version: str
) -> list[dict]:
    return [
        {
            "benchmark": benchmark,
            "prompt_id": c.request_id,
            "temperature": c.temperature,
            "sample_index": c.sample_index,
            "response": c.text,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            version_column: version,
        }
        for c in completions
    ]


def response_keys(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a partition of responses' data version hashes: each sample's prompt, temperature, index and text."""
    return [(r["prompt_id"], r["temperature"], r["sample_index"], r["response"]) for r in rows]


def sampled_responses_output(
    ctx: StepContext,
    benchmark: str,
    n_prompts: int,
    stats: GenerationStats,
    completions: Sequence[Completion],
    details: dict[str, Any],
) -> SampledResponses:
    """What a partition of sampled responses (one row per completion) reports: ``details``, then the generation's
    metadata."""
    return SampledResponses(
        rows=len(completions),
        prompts=n_prompts,
        budget_exhausted=stats.budget_exhausted,
        details={**details, **generation_metadata(stats, completions)},
        **evaluation_only_fields(ctx.config.benchmark(benchmark), n_prompts),
    )


TEACHER_RESPONSES_CHECKS = sampled_responses_checks(
    "teacher",
    "every prompt has n samples at each temperature (not cut short by the budget)",
    lambda config: config.sampling,
)


@committed("teacher_responses", checks=TEACHER_RESPONSES_CHECKS)
def make_teacher_responses(ctx: StepContext, benchmark: str) -> StepResult:
    prompts = read_prompts(ctx, benchmark, "train")
    prompts_version = ctx.upstream_version("benchmark_prompts", benchmark)
    requests = sampling_requests(prompts, ctx.config)
    completions, stats, identity = generate_rows(
        ctx, ctx.config.teacher, requests, f"teacher_responses[{benchmark}]"
    )
    version = version_from_identity(identity, ctx.config)
    rows = response_rows(completions, benchmark, "teacher_version", version)
    ctx.stage("teacher_responses", benchmark, rows)
    ctx.record_usage(usage_row(ctx, "teacher_responses", benchmark, version, stats))
    data_version = content_hash(version, response_keys(rows))
    StepLineage.of(version, {"benchmark_prompts": prompts_version}).record(
        ctx, "teacher_responses", benchmark, data_version
    )
    output = sampled_responses_output(
        ctx, benchmark, len(prompts), stats, completions, {"teacher_version": version}
    )
    return StepResult.of(data_version, output)
