"""reward_labels: the student's responses labelled the way the teacher's were (``steps/pseudo_labels.py``), and
reward-model pairs built from the labelled responses of both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rd_pipeline.benchmarks import extract_item_answer, get_benchmark
from rd_pipeline.labeling.good import is_good_response
from rd_pipeline.labeling.pairs import LabelledResponse, RewardPair, build_reward_pairs, pair_source_stats
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.steps.pseudo_labels import Labelled, judge_scores
from rd_pipeline.steps.results import RewardLabels, evaluation_only_fields
from rd_pipeline.steps.teacher import usage_row


@committed("reward_labels")
def make_reward_labels(ctx: StepContext, benchmark: str) -> StepResult:
    """Label the student's responses the way the teacher's were, and build reward-model pairs from both."""
    config = ctx.config
    prompt_rows = {row["prompt_id"]: row for row in read_prompts(ctx, benchmark, "train")}
    labels_version = ctx.upstream_version("pseudo_labels", benchmark)
    student_version = ctx.upstream_version("student_responses", benchmark)
    teacher_labels = {
        (r["prompt_id"], r["temperature"], r["sample_index"]): r
        for r in ctx.store.read("pseudo_labels", benchmark)
    }
    label_version = content_hash(
        labels_version["data_version"],
        student_version["data_version"],
        config.labeling.model_dump(mode="json"),
    )
    labelled = _teacher_reward_rows(
        ctx.store.read("teacher_responses", benchmark), teacher_labels, label_version
    )
    students = _student_reward_rows(ctx, benchmark, prompt_rows, teacher_labels, label_version)
    labelled += students.rows
    pairs = _reward_pairs(ctx, benchmark, prompt_rows, teacher_labels, labelled)
    pair_rows = [_pair_row(benchmark, pair, label_version) for pair in pairs]
    ctx.stage("reward_labels", benchmark, labelled)
    ctx.stage("reward_pairs", benchmark, pair_rows)
    data_version = content_hash(
        label_version, [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pair_rows]
    )
    lineage = StepLineage.of(
        labels_version["teacher_version"],
        {"pseudo_labels": labels_version, "student_responses": student_version},
    )
    lineage.record(ctx, "reward_labels", benchmark, data_version)
    return StepResult.of(
        data_version,
        _reward_labels_output(
            ctx,
            benchmark,
            n_prompts=len(prompt_rows),
            labelled=labelled,
            pairs=pairs,
            details={"teacher_version": labels_version["teacher_version"], **students.metadata},
        ),
    )


def _reward_labels_output(
    ctx: StepContext,
    benchmark: str,
    *,
    n_prompts: int,
    labelled: Sequence[dict[str, Any]],
    pairs: Sequence[RewardPair],
    details: dict[str, Any],
) -> RewardLabels:
    """What reward_labels reports: pairs by split and source, and the share of good responses by source."""
    by_source = {s: [r for r in labelled if r["source"] == s] for s in ("teacher", "student")}
    source_stats = pair_source_stats(pairs)
    return RewardLabels(
        pairs=len(pairs),
        train_pairs=sum(1 for p in pairs if p.split == "train"),
        heldout_pairs=sum(1 for p in pairs if p.split != "train"),
        chosen_teacher_share=_round(source_stats.chosen_teacher_share),
        details={
            "labelled_responses": len(labelled),
            "teacher_good_fraction": _fraction(by_source["teacher"]),
            "student_good_fraction": _fraction(by_source["student"]),
            "pair_policy": ctx.config.labeling.pair_policy,
            "rejected_teacher_share": _round(source_stats.rejected_teacher_share),
            "same_source_pairs": source_stats.same_source_pairs,
            "shared_text_pairs": source_stats.shared_text_pairs,
            **details,
        },
        **evaluation_only_fields(ctx.config.benchmark(benchmark), n_prompts),
    )


def _teacher_reward_rows(
    teacher_rows: Sequence[dict[str, Any]],
    teacher_labels: dict[tuple[str, float, int], dict[str, Any]],
    label_version: str,
) -> list[dict[str, Any]]:
    """The teacher's responses to labelled prompts, with their pseudo labels."""
    rows = []
    for row in teacher_rows:
        label = teacher_labels[(row["prompt_id"], row["temperature"], row["sample_index"])]
        if label["prompt_labelled"]:
            rows.append(
                _reward_row(
                    row,
                    source="teacher",
                    good=label["good"],
                    judge_score=label["judge_score"],
                    label_version=label_version,
                )
            )
    return rows


def _student_reward_rows(
    ctx: StepContext,
    benchmark: str,
    prompt_rows: dict[str, dict[str, Any]],
    teacher_labels: dict[tuple[str, float, int], dict[str, Any]],
    label_version: str,
) -> Labelled:
    """The student's responses labelled like the teacher's: against the prompt's majority answer on verifiable
    benchmarks (prompts without one left out), by the judge on open-ended ones (responses without a verdict left
    out)."""
    labeling = ctx.config.labeling
    bench = get_benchmark(benchmark)
    student_rows = ctx.store.read("student_responses", benchmark)
    rows: list[dict[str, Any]] = []
    if bench.verifiable:
        prompt_answers = {
            lab["prompt_id"]: lab["prompt_answer"]
            for lab in teacher_labels.values()
            if lab["prompt_labelled"]
        }
        for row in student_rows:
            majority = prompt_answers.get(row["prompt_id"])
            if majority is None:
                continue
            answer = extract_item_answer(row_to_item(prompt_rows[row["prompt_id"]]), row["response"])
            good = is_good_response(labeling, answer=answer, majority=majority, equal=bench.answers_equal)
            rows.append(_reward_row(row, source="student", good=good, label_version=label_version))
        return Labelled(rows=rows, label_version=label_version, metadata={})
    scores, stats, _, verdicts = judge_scores(
        ctx, benchmark, prompt_rows, student_rows, f"reward_labels[{benchmark}]"
    )
    for row, score in zip(student_rows, scores, strict=True):
        if score is not None:
            good = is_good_response(labeling, score=score)
            rows.append(
                _reward_row(row, source="student", good=good, judge_score=score, label_version=label_version)
            )
    ctx.record_usage(usage_row(ctx, "reward_labels", benchmark, label_version, stats))
    metadata = {**verdicts, "judge_samples_generated": stats.samples_generated}
    return Labelled(rows=rows, label_version=label_version, metadata=metadata)


def _reward_pairs(
    ctx: StepContext,
    benchmark: str,
    prompt_rows: dict[str, dict[str, Any]],
    teacher_labels: dict[tuple[str, float, int], dict[str, Any]],
    labelled: Sequence[dict[str, Any]],
) -> list[RewardPair]:
    """Chosen/rejected pairs from the labelled responses of both sources."""
    verifiable = get_benchmark(benchmark).verifiable
    # Teacher and student responses alike are labelled against the prompt's majority answer, so each
    # label is as sure as that majority's vote share.
    prompt_shares = {
        lab["prompt_id"]: lab["vote_share"] for lab in teacher_labels.values() if lab["prompt_labelled"]
    }
    return build_reward_pairs(
        [
            LabelledResponse(
                benchmark=benchmark,
                prompt_id=r["prompt_id"],
                prompt=prompt_rows[r["prompt_id"]]["prompt"],
                response=r["response"],
                source=r["source"],
                correct=r["good"] if verifiable else None,
                score=r["judge_score"],
                vote_share=prompt_shares.get(r["prompt_id"]),
            )
            for r in labelled
        ],
        ctx.config.labeling,
        seed=ctx.config.sampling.seed,
    )


def _pair_row(benchmark: str, pair: RewardPair, label_version: str) -> dict[str, Any]:
    """One reward_pairs row."""
    return {
        "benchmark": benchmark,
        "prompt_id": pair.prompt_id,
        "prompt": pair.prompt,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "margin": pair.margin,
        "split": pair.split,
        "label_version": label_version,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fraction(rows: Sequence[dict[str, Any]]) -> float | None:
    return round(sum(1 for r in rows if r["good"]) / len(rows), 4) if rows else None


def _reward_row(
    row: dict[str, Any],
    *,
    source: str,
    good: bool,
    label_version: str,
    judge_score: float | None = None,
) -> dict[str, Any]:
    """One reward_labels row: a teacher or student response with its label."""
    return {
        "benchmark": row["benchmark"],
        "prompt_id": row["prompt_id"],
        "source": source,
        "temperature": row["temperature"],
        "sample_index": row["sample_index"],
        "response": row["response"],
        "good": bool(good),
        "judge_score": judge_score,
        "label_version": label_version,
    }
