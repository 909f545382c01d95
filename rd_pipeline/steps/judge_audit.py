"""judge_audit: every judge the pipeline uses (the labelling judge and the eval judge), measured on pairs of the
teacher's responses: agreement with gold where the benchmark has it, swap consistency, position and length bias,
and where its verdicts came from. The metrics are ``rd_pipeline.evaluation.judge_audit``'s.

At most ``judge_audit.max_pairs`` pairs per partition, (correct, incorrect) pairs first; every judge request goes
through the journal, so a re-run with nothing changed asks no judge anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rd_pipeline.benchmarks import get_benchmark, is_item_correct
from rd_pipeline.config import ModelConfig, PipelineConfig
from rd_pipeline.evaluation.judge_audit import (
    AuditMetric,
    AuditPair,
    AuditResponse,
    audited_responses,
    pairwise_metrics,
    pointwise_metrics,
    select_audit_pairs,
)
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import GenerationStats
from rd_pipeline.labeling.judge import JUDGE_VERSION, add_stats, judge_pairwise, judge_pointwise
from rd_pipeline.steps.check_registry import AssetCheck, CheckDetails
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.generation_guard import guarded_generation
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.steps.results import JudgeAudit, evaluation_only_fields
from rd_pipeline.steps.teacher import usage_row

JUDGE_ROLES = ("labeling", "eval")


def audited_judges(config: PipelineConfig) -> list[tuple[str, ModelConfig]]:
    """The judges the pipeline uses, by role: ``labeling`` (``judge``, else the teacher) and ``eval``."""
    return [("labeling", config.judge_model), ("eval", config.eval_judge_model)]


def audit_responses(
    benchmark: str, prompt_rows: dict[str, dict[str, Any]], responses: Sequence[dict[str, Any]]
) -> list[AuditResponse]:
    """The teacher's responses with their gold correctness (None where the benchmark or item has no gold)."""
    verifiable = get_benchmark(benchmark).verifiable
    audited = []
    for row in responses:
        prompt = prompt_rows.get(row["prompt_id"])
        if prompt is None:
            continue
        item = row_to_item(prompt)
        correct = is_item_correct(item, row["response"]) if verifiable and item.gold is not None else None
        audited.append(
            AuditResponse(
                key=f"{row['prompt_id']}/{row['temperature']}/{row['sample_index']}",
                prompt_id=row["prompt_id"],
                instruction=item.question,
                response=row["response"],
                correct=correct,
            )
        )
    return audited


@dataclass(frozen=True)
class _JudgeAudit:
    """One judge's metrics on the partition's pairs, its identity, and what judging cost."""

    role: str
    ref: str
    version: str
    metrics: list[AuditMetric]
    stats: GenerationStats


def _audit_judge(
    ctx: StepContext, benchmark: str, role: str, judge: ModelConfig, pairs: Sequence[AuditPair]
) -> _JudgeAudit:
    """Judge every pair in both orders and rate each of its responses alone, with one judge."""
    config = ctx.config
    max_new_tokens = config.labeling.judge_max_new_tokens
    gold = get_benchmark(benchmark).verifiable
    generator = make_generator(judge, ctx.rd_home, role=f"{role} judge")
    try:
        ctx.log(f"judge_audit[{benchmark}]: {role} judge {judge.ref} on {len(pairs)} pairs")
        with guarded_generation(ctx, generator, f"judge_audit[{benchmark}] {role}") as identity:
            pairwise, pairwise_stats = judge_pairwise(
                generator,
                [(p.key, p.first.instruction, p.first.response, p.second.response) for p in pairs],
                max_new_tokens,
            )
            pointwise, pointwise_stats = judge_pointwise(
                generator,
                [(r.key, r.instruction, r.response) for r in audited_responses(pairs)],
                max_new_tokens,
            )
    finally:
        generator.close()
    metrics = pairwise_metrics(pairs, pairwise, gold) + pointwise_metrics(
        pairs, pointwise, config.labeling.judge_good_score, gold
    )
    version = content_hash(identity, JUDGE_VERSION)
    return _JudgeAudit(role, judge.ref, version, metrics, add_stats(pairwise_stats, pointwise_stats))


def _audit_judges(ctx: StepContext, benchmark: str, pairs: Sequence[AuditPair]) -> list[_JudgeAudit]:
    """Every judge's audit; a role whose judge is configured like an earlier role's shares that audit (the
    journal would answer every request again anyway, but the model need not be loaded twice)."""
    audits: list[_JudgeAudit] = []
    done: dict[str, _JudgeAudit] = {}
    for role, judge in audited_judges(ctx.config):
        key = judge.model_dump_json()
        if key in done:
            audits.append(replace(done[key], role=role, stats=GenerationStats()))
            continue
        done[key] = _audit_judge(ctx, benchmark, role, judge, pairs)
        audits.append(done[key])
    return audits


def _metric_row(
    benchmark: str, audit: _JudgeAudit, metric: AuditMetric, teacher_version: str
) -> dict[str, Any]:
    estimate = metric.estimate
    return {
        "benchmark": benchmark,
        "judge_role": audit.role,
        "judge_ref": audit.ref,
        "judge_version": audit.version,
        "mode": metric.mode,
        "metric": metric.metric,
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "n": estimate.n,
        "teacher_version": teacher_version,
    }


def _values(audits: Sequence[_JudgeAudit], wanted: set[tuple[str, str]]) -> list[float]:
    """The measured values (n > 0, not NaN) of the wanted (mode, metric)s over every audited judge."""
    return [
        m.estimate.value
        for audit in audits
        for m in audit.metrics
        if (m.mode, m.metric) in wanted and m.estimate.n > 0 and not math.isnan(m.estimate.value)
    ]


def _worst(values: list[float], badness: Any) -> float | None:
    return round(max(values, key=badness), 4) if values else None


def _output(
    ctx: StepContext,
    benchmark: str,
    n_prompts: int,
    pairs: Sequence[AuditPair],
    audits: Sequence[_JudgeAudit],
) -> JudgeAudit:
    """What judge_audit reports: the pairs, the worst judge on each checked metric, and each judge's metrics."""
    details: dict[str, Any] = {"max_pairs": ctx.config.judge_audit.max_pairs}
    for audit in audits:
        details[f"{audit.role}_judge"] = audit.ref
        for m in audit.metrics:
            if m.estimate.n > 0 and not math.isnan(m.estimate.value):
                details[f"{audit.role}_{m.mode}_{m.metric}"] = round(m.estimate.value, 4)
    return JudgeAudit(
        pairs=len(pairs),
        gold_pairs=sum(1 for p in pairs if p.gold_preference is not None),
        judges=[f"{audit.role}: {audit.ref}" for audit in audits],
        samples_generated=sum(audit.stats.samples_generated for audit in audits),
        worst_swap_consistency=_worst(_values(audits, {("pairwise", "swap_consistency")}), lambda v: -v),
        worst_position_bias=_worst(_values(audits, {("pairwise", "position_bias")}), lambda v: abs(v - 0.5)),
        worst_gold_agreement=_worst(
            _values(audits, {("pairwise", "gold_agreement"), ("pointwise", "gold_auc")}), lambda v: -v
        ),
        worst_length_bias=_worst(
            _values(audits, {("pairwise", "length_bias"), ("pointwise", "length_bias")}), abs
        ),
        details=details,
        **evaluation_only_fields(ctx.config.benchmark(benchmark), n_prompts),
    )


def _unmeasured(result: JudgeAudit) -> dict[str, Any]:
    return {"evaluation_only": True} if result.evaluation_only else {}


def _swap_consistency(result: JudgeAudit, config: PipelineConfig) -> CheckDetails:
    value, threshold = result.worst_swap_consistency, config.checks.min_judge_swap_consistency
    details = {"worst_swap_consistency": value, "min_judge_swap_consistency": threshold}
    return value is None or value >= threshold, details | _unmeasured(result)


def _position_bias(result: JudgeAudit, config: PipelineConfig) -> CheckDetails:
    value, threshold = result.worst_position_bias, config.checks.max_judge_position_bias
    details = {"worst_first_position_win_share": value, "max_judge_position_bias": threshold}
    return value is None or abs(value - 0.5) <= threshold, details | _unmeasured(result)


def _gold_agreement(result: JudgeAudit, config: PipelineConfig) -> CheckDetails:
    value, threshold = result.worst_gold_agreement, config.checks.min_judge_gold_agreement
    details = {
        "worst_gold_agreement": value,
        "min_judge_gold_agreement": threshold,
        "gold_pairs": result.gold_pairs,
    }
    return value is None or value >= threshold, details | _unmeasured(result)


def _length_bias(result: JudgeAudit, config: PipelineConfig) -> CheckDetails:
    value, threshold = result.worst_length_bias, config.checks.max_judge_length_bias
    details = {"worst_length_bias": value, "max_judge_length_bias": threshold}
    return value is None or abs(value) <= threshold, details | _unmeasured(result)


_BLOCKING = "judge_audit_blocking"
JUDGE_AUDIT_CHECKS = (
    AssetCheck(
        "judge_swap_consistency",
        False,
        "each judge gives the same verdict in both orders on at least checks.min_judge_swap_consistency of pairs",
        _swap_consistency,
        blocking_setting=_BLOCKING,
    ),
    AssetCheck(
        "judge_position_bias",
        False,
        "each judge's share of first-position wins is within checks.max_judge_position_bias of 0.5",
        _position_bias,
        blocking_setting=_BLOCKING,
    ),
    AssetCheck(
        "judge_gold_agreement",
        False,
        "where gold exists, each judge prefers the correct response on at least checks.min_judge_gold_agreement "
        "of (correct, incorrect) pairs, pairwise and by its ratings",
        _gold_agreement,
        blocking_setting=_BLOCKING,
    ),
    AssetCheck(
        "judge_length_bias",
        False,
        "no judge's preference follows response length beyond checks.max_judge_length_bias (Kendall tau-b)",
        _length_bias,
        blocking_setting=_BLOCKING,
    ),
)


@committed("judge_audit", checks=JUDGE_AUDIT_CHECKS)
def make_judge_audit(ctx: StepContext, benchmark: str) -> StepResult:
    """Audit every judge on pairs of the partition's teacher responses; one row per judge, mode and metric."""
    config = ctx.config
    prompt_rows = {row["prompt_id"]: row for row in read_prompts(ctx, benchmark, "train")}
    upstream = ctx.upstream_version("teacher_responses", benchmark)
    responses = audit_responses(benchmark, prompt_rows, ctx.store.read("teacher_responses", benchmark))
    pairs = select_audit_pairs(responses, config.judge_audit.max_pairs, seed=config.sampling.seed)
    audits = _audit_judges(ctx, benchmark, pairs) if pairs else []
    teacher_version = upstream["teacher_version"]
    rows = [_metric_row(benchmark, a, m, teacher_version) for a in audits for m in a.metrics]
    for audit in (a for a in audits if a.stats.samples_requested):
        ctx.record_usage(usage_row(ctx, "judge_audit", benchmark, audit.version, audit.stats))
    ctx.stage("judge_audit", benchmark, rows)
    data_version = content_hash(
        upstream["data_version"],
        config.judge_audit.model_dump(mode="json"),
        [(r["judge_role"], r["judge_version"], r["mode"], r["metric"], r["value"], r["n"]) for r in rows],
    )
    StepLineage.of(teacher_version, {"teacher_responses": upstream}).record(
        ctx, "judge_audit", benchmark, data_version
    )
    return StepResult.of(data_version, _output(ctx, benchmark, len(prompt_rows), pairs, audits))
