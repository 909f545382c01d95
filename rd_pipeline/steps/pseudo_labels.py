"""pseudo_labels: labels without humans for the teacher's responses (``reward_labels`` labels the student's the
same way, with ``judge_scores`` and ``Labelled`` from here).

Verifiable benchmarks: each prompt's label is the majority answer of the teacher's samples (prompts whose vote is too
weak get no label). Open-ended: the judge scores each response. Which responses are good is
``rd_pipeline.labeling.good.is_good_response``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rd_pipeline.benchmarks import extract_item_answer, get_benchmark
from rd_pipeline.config import PipelineConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import GenerationStats
from rd_pipeline.labeling.good import is_good_response
from rd_pipeline.labeling.judge import JUDGE_VERSION, judge_pointwise, judge_summary
from rd_pipeline.labeling.quality import label_quality, label_record
from rd_pipeline.labeling.vote import majority_vote
from rd_pipeline.steps.check_registry import AssetCheck, CheckDetails, not_empty
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.generation_guard import guarded_generation
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.steps.results import PseudoLabels, evaluation_only_fields
from rd_pipeline.steps.teacher import generation_metadata, usage_row


def _by_prompt(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["prompt_id"]].append(row)
    return grouped


@dataclass(frozen=True, kw_only=True)
class Labelled:
    """Label rows of one partition, the version of the labelling that made them, and what it reports."""

    rows: list[dict[str, Any]]
    label_version: str
    metadata: dict[str, Any]


def judge_scores(
    ctx: StepContext,
    benchmark: str,
    prompts: dict[str, dict[str, Any]],
    responses: Sequence[dict[str, Any]],
    label: str,
) -> tuple[list[float | None], GenerationStats, dict[str, str], dict[str, float]]:
    """Pointwise judge scores (None = no verdict) for responses to open-ended prompts, the judge's identity, and
    metadata on the verdicts: how many came from the judge's probabilities, its text, a retry, or none."""
    judge_model = ctx.config.judge_model
    generator = make_generator(judge_model, ctx.rd_home, role="judge")
    items = [
        (
            f"{r['prompt_id']}/{r['temperature']}/{r['sample_index']}",
            prompts[r["prompt_id"]]["question"],
            r["response"],
        )
        for r in responses
    ]
    try:
        ctx.log(f"{label}: judging {len(items)} responses with {judge_model.ref}")
        with guarded_generation(ctx, generator, label) as identity:
            judgments, stats = judge_pointwise(generator, items, ctx.config.labeling.judge_max_new_tokens)
    finally:
        generator.close()
    summary = judge_summary(pointwise=judgments)
    verdicts = {
        f"judge_{name.removeprefix('pointwise_')}": round(value, 4)
        for name, value in summary.items()
        if name.startswith("pointwise_verdicts_") or name == "pointwise_mean_verdict_mass"
    }
    return [j.score for j in judgments], stats, identity, {k: v for k, v in verdicts.items() if v == v}


def _label_coverage(result: PseudoLabels, config: PipelineConfig) -> CheckDetails:
    share = result.mean_vote_share
    minima = config.checks
    passed = result.coverage >= minima.min_label_coverage and (
        share is None or share >= minima.min_mean_vote_share
    )
    details = {
        "coverage": result.coverage,
        "min_coverage": minima.min_label_coverage,
        "mean_vote_share": share,
        "min_mean_vote_share": minima.min_mean_vote_share,
    }
    if result.evaluation_only:
        return True, details | {"evaluation_only": True}
    return passed, details


def _gold_label_accuracy(result: PseudoLabels, config: PipelineConfig) -> CheckDetails:
    accuracy = result.gold_label_accuracy
    threshold = config.checks.min_gold_label_accuracy
    passed = accuracy is None or accuracy >= threshold  # open-ended benchmarks have no gold to compare with
    return passed, {
        "gold_label_accuracy": accuracy,
        "min_gold_label_accuracy": threshold,
        "labelled_prompts": result.n_labelled,
    }


PSEUDO_LABELS_CHECKS = (
    AssetCheck("not_empty", True, "responses were labelled", not_empty),
    AssetCheck(
        "label_coverage",
        True,
        "label coverage and mean vote share reach the configured minima",
        _label_coverage,
    ),
    AssetCheck(
        "gold_label_accuracy",
        True,
        "where gold answers exist, labels agree with them at least checks.min_gold_label_accuracy",
        _gold_label_accuracy,
    ),
)


@committed("pseudo_labels", checks=PSEUDO_LABELS_CHECKS)
def make_pseudo_labels(ctx: StepContext, benchmark: str) -> StepResult:
    """Label the teacher's responses: by majority vote on verifiable benchmarks, by the judge on open-ended ones."""
    prompt_rows = {row["prompt_id"]: row for row in read_prompts(ctx, benchmark, "train")}
    upstream = ctx.upstream_version("teacher_responses", benchmark)
    responses = ctx.store.read("teacher_responses", benchmark)
    if get_benchmark(benchmark).verifiable:
        labelled = _vote_labels(ctx, benchmark, prompt_rows, responses, upstream)
    else:
        labelled = _judge_labels(ctx, benchmark, prompt_rows, responses, upstream)
    rows = labelled.rows
    ctx.stage("pseudo_labels", benchmark, rows)
    data_version = content_hash(
        labelled.label_version,
        [(r["prompt_id"], r["temperature"], r["sample_index"], r["good"], r["judge_score"]) for r in rows],
    )
    lineage = StepLineage.of(upstream["teacher_version"], {"teacher_responses": upstream})
    lineage.record(ctx, "pseudo_labels", benchmark, data_version)
    good = sum(1 for r in rows if r["good"])
    labelled_prompts = {r["prompt_id"] for r in rows if r["prompt_labelled"]}
    quality = labelled.metadata
    return StepResult.of(
        data_version,
        PseudoLabels(
            rows=len(rows),
            coverage=round(len(labelled_prompts) / len(prompt_rows), 4) if prompt_rows else 0.0,
            mean_vote_share=quality.get("mean_vote_share"),
            n_labelled=quality.get("n_labelled"),
            gold_label_accuracy=quality.get("gold_label_accuracy"),
            details={
                "good_responses": good,
                "good_fraction": round(good / len(rows), 4) if rows else 0.0,
                "labelled_prompts": len(labelled_prompts),
                "teacher_version": upstream["teacher_version"],
                "label_version": labelled.label_version,
                **quality,  # vote quality (verifiable) or judge verdicts (open-ended)
            },
            **evaluation_only_fields(ctx.config.benchmark(benchmark), len(prompt_rows)),
        ),
    )


def _vote_labels(
    ctx: StepContext,
    benchmark: str,
    prompt_rows: dict[str, dict[str, Any]],
    responses: Sequence[dict[str, Any]],
    upstream: dict[str, Any],
) -> Labelled:
    """Each prompt's label is the majority answer of its responses; a response is good if it matches it."""
    labeling = ctx.config.labeling
    bench = get_benchmark(benchmark)
    label_version = content_hash(upstream["data_version"], labeling.model_dump(mode="json"))
    rows: list[dict[str, Any]] = []
    quality_records = []
    for prompt_id, group in _by_prompt(responses).items():
        item = row_to_item(prompt_rows[prompt_id])
        answers = [extract_item_answer(item, r["response"]) for r in group]
        vote = majority_vote(answers, bench.answers_equal, labeling.min_vote_share, labeling.min_valid_votes)
        quality_records.append(label_record(prompt_id, vote, item.gold, bench.answers_equal))
        majority = vote.answer if vote.labelled else None
        for row, answer in zip(group, answers, strict=True):
            rows.append(
                _label_row(
                    row,
                    extracted_answer=answer,
                    prompt_answer=majority,
                    vote_share=vote.share,
                    valid_votes=vote.n_valid,
                    prompt_labelled=vote.labelled,
                    good=is_good_response(
                        labeling, answer=answer, majority=majority, equal=bench.answers_equal
                    ),
                    teacher_version=upstream["teacher_version"],
                    label_version=label_version,
                )
            )
    quality = label_quality(quality_records)
    metadata = {
        f"gold_{k}" if k in ("label_accuracy", "majority_accuracy") else k: v
        for k, v in quality.items()
        if k not in ("n_prompts", "coverage")
    }
    return Labelled(rows=rows, label_version=label_version, metadata=metadata)


def _judge_labels(
    ctx: StepContext,
    benchmark: str,
    prompt_rows: dict[str, dict[str, Any]],
    responses: Sequence[dict[str, Any]],
    upstream: dict[str, Any],
) -> Labelled:
    """The judge scores every response; a response is good if its score reaches the configured minimum."""
    labeling = ctx.config.labeling
    scores, stats, judge_identity, verdicts = judge_scores(
        ctx, benchmark, prompt_rows, responses, f"pseudo_labels[{benchmark}]"
    )
    label_version = content_hash(
        upstream["data_version"], labeling.model_dump(mode="json"), judge_identity, JUDGE_VERSION
    )
    rows = [
        _label_row(
            row,
            judge_score=score,
            prompt_labelled=score is not None,
            good=is_good_response(labeling, score=score),
            teacher_version=upstream["teacher_version"],
            label_version=label_version,
        )
        for row, score in zip(responses, scores, strict=True)
    ]
    parsed = [s for s in scores if s is not None]
    metadata = {
        **verdicts,
        "judge_parse_rate": round(len(parsed) / len(scores), 4) if scores else 0.0,
        "mean_judge_score": round(sum(parsed) / len(parsed), 3) if parsed else None,
        **{f"judge_{k}": v for k, v in generation_metadata(stats, []).items() if k != "mean_response_tokens"},
    }
    ctx.record_usage(usage_row(ctx, "pseudo_labels", benchmark, label_version, stats))
    return Labelled(rows=rows, label_version=label_version, metadata=metadata)


def _label_row(
    response: dict[str, Any],
    *,
    prompt_labelled: bool,
    good: bool,
    teacher_version: str,
    label_version: str,
    extracted_answer: str | None = None,
    prompt_answer: str | None = None,
    vote_share: float | None = None,
    valid_votes: int | None = None,
    judge_score: float | None = None,
) -> dict[str, Any]:
    """One pseudo_labels row for a teacher response."""
    return {
        "benchmark": response["benchmark"],
        "prompt_id": response["prompt_id"],
        "temperature": response["temperature"],
        "sample_index": response["sample_index"],
        "extracted_answer": extracted_answer,
        "prompt_answer": prompt_answer,
        "vote_share": vote_share,
        "valid_votes": valid_votes,
        "judge_score": judge_score,
        "prompt_labelled": prompt_labelled,
        "good": bool(good),
        "teacher_version": teacher_version,
        "label_version": label_version,
    }
