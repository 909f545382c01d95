"""sft_student: the base student fine-tuned on the teacher's well-labelled responses, validated against the base."""

from __future__ import annotations

from typing import Any

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.config import PipelineConfig, versioned_dump
from rd_pipeline.evaluation.metrics import training_phase
from rd_pipeline.labeling.judge import JUDGE_VERSION
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.check_registry import (
    AssetCheck,
    CheckDetails,
)
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepResult, content_hash
from rd_pipeline.steps.generation_guard import import_journal_spend
from rd_pipeline.steps.model_training import (
    against_start,
    partitions_lineage,
    skipped_benchmarks,
    train_checkpoint,
    trained_model_result,
    upstream_partitions,
)
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.validation import (
    has_open_ended,
    held_out_of_sft,
    score_change,
    split_prompts,
    validation_rows,
)
from rd_pipeline.training.base_comparison import JudgeSettings


def _sft_examples(ctx: StepContext, benchmark: str, held_out: set[str]) -> list[dict[str, Any]]:
    """The teacher's good responses to one benchmark's train prompts, except the ``held_out`` prompt ids (SFT's
    validation prompts), as SFT examples, each text once per prompt."""
    prompts = {
        row["prompt_id"]: row["prompt"]
        for row in read_prompts(ctx, benchmark, "train")
        if row["prompt_id"] not in held_out
    }
    good = {
        (r["prompt_id"], r["temperature"], r["sample_index"])
        for r in ctx.store.read("pseudo_labels", benchmark)
        if r["good"]
    }
    examples: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for row in ctx.store.read("teacher_responses", benchmark):
        key = (row["prompt_id"], row["response"])
        sample = (row["prompt_id"], row["temperature"], row["sample_index"])
        if row["prompt_id"] in prompts and sample in good and key not in seen:
            seen.add(key)
            examples.append(
                {
                    "prompt": [{"role": "user", "content": prompts[row["prompt_id"]]}],
                    "completion": [{"role": "assistant", "content": row["response"]}],
                }
            )
    return examples


def _sft_improves(result: TrainedModel, _: PipelineConfig) -> CheckDetails:
    """Warns when the shipped SFT student's validation measure (agreement with the vote labels, win rate against
    the base student on open-ended prompts, or both combined; see ``score_change``) is not above the base
    student's (step 0), e.g. when the base student itself shipped."""
    return against_start(
        result.metrics.get("validation") or {}, "base", lambda c: c["difference"] > 0, score_change
    )


def _sft_not_worse(result: TrainedModel, _: PipelineConfig) -> CheckDetails:
    """Fails when the shipped SFT student's validation measure is below the base student's by more than the 95%
    interval of the difference."""
    return against_start(
        result.metrics.get("validation") or {}, "base", lambda c: c["difference_ci_high"] >= 0, score_change
    )


SFT_STUDENT_CHECKS = (
    AssetCheck(
        "sft_improves",
        False,
        "the shipped SFT student's validation measure (agreement with the vote labels; on open-ended prompts the "
        "judge's preference over the base student's response) is above the base student's; a warning only (ties "
        "ship the base student, step 0)",
        _sft_improves,
    ),
    AssetCheck(
        "sft_not_worse",
        True,
        "the shipped SFT student's validation measure (agreement with the vote labels; on open-ended prompts the "
        "judge's preference over the base student's response) is not below the base student's by more than the "
        "95% interval of the difference",
        _sft_not_worse,
    ),
)


def _shipped(validation: dict[str, Any], steps: int | None) -> str:
    """Which weights ship, in words: the base student, a step and its third of training, or the last step."""
    selected = validation.get("selected_step")
    if selected == 0:
        return "base student (step 0): SFT did not improve its validation measure"
    if selected is None:
        return f"last step, not selected ({validation.get('note', 'no validation score')})"
    return f"step {selected} of {steps} trained ({training_phase(selected, steps)} third)"


def _unscored_benchmarks(validation: list[dict[str, Any]]) -> dict[str, Any]:
    """The verifiable benchmarks whose validation prompts have no vote label to agree with: decoded, but left out
    of selection (open-ended ones are judged against the base student)."""
    scored = {
        record["benchmark"]
        for record in validation
        if record["vote_answer"] is not None or not get_benchmark(record["benchmark"]).verifiable
    }
    names = sorted({record["benchmark"] for record in validation} - scored)
    if not names:
        return {}
    return {
        "validation_unscored": f"{', '.join(names)}: no vote labels; their validation prompts are decoded but "
        "not scored, and do not take part in selection"
    }


def _validation_judge(ctx: StepContext, validation: list[dict[str, Any]]) -> dict[str, Any]:
    """The judge settings the SFT job needs to judge open-ended validation prompts against the base student
    (none without such prompts): the labelling judge (default the teacher), RD_HOME and its token allowance."""
    if not has_open_ended(validation):
        return {}
    judge = JudgeSettings(
        ctx.config.judge_model.model_dump(mode="json"),
        str(ctx.rd_home),
        ctx.config.labeling.judge_max_new_tokens,
    )
    return {"judge": judge.to_json()}


def _judge_version(config: PipelineConfig, validation: list[dict[str, Any]]) -> list[Any]:
    """What of the judge a SFT student's version depends on: its identity when it selects among steps."""
    if not has_open_ended(validation):
        return []
    return [versioned_dump(config.judge_model), JUDGE_VERSION, config.labeling.judge_max_new_tokens]


@committed("sft_student", checks=SFT_STUDENT_CHECKS)
def make_sft_student(ctx: StepContext) -> StepResult:
    """Fine-tune the base student on the teacher's good responses of every benchmark, validated on training
    prompts held out of SFT (best checkpoint kept, the base student as step 0); fills ``sft_validation``."""
    config = ctx.config
    labels = upstream_partitions(ctx, "pseudo_labels")
    _, validation = split_prompts(ctx, "sft")
    examples = _all_sft_examples(ctx, len(validation))
    base = resolve_model(config.student.ref, ctx.rd_home, config.student.revision)
    version = content_hash(
        "sft",
        base.fingerprint,
        versioned_dump(config.sft),
        {name: record["data_version"] for name, record in labels.items()},
        *_judge_version(config, validation),
    )
    ctx.log(
        f"sft_student: {len(examples)} examples from {len(labels)} benchmarks, {len(validation)} prompts held "
        "out for validation"
    )
    lineage = partitions_lineage("pseudo_labels", labels)
    path, metrics, trained = train_checkpoint(
        ctx,
        "sft",
        "sft_student",
        version,
        {"base": base.location, "revision": base.revision, **_validation_judge(ctx, validation)},
        {"examples": examples, "validation": validation},
        lineage,
        config.student.ref,
    )
    if has_open_ended(validation):
        import_journal_spend(ctx)  # what the judge spent inside the training job, into the api_spend ledger
    curve = validation_rows("sft", version, metrics.get("validation") or {})
    for benchmark in config.benchmark_names:
        ctx.stage("sft_validation", benchmark, curve.get(benchmark, []), sft_version=version)
    details = {
        "examples": len(examples),
        "validation_prompts": len(validation),
        "shipped": _shipped(metrics.get("validation") or {}, metrics.get("steps")),
        **_unscored_benchmarks(validation),
        **skipped_benchmarks(ctx),
    }
    return trained_model_result(version, path, trained, lineage, metrics, details)


def _all_sft_examples(ctx: StepContext, n_validation: int) -> list[dict[str, Any]]:
    """The SFT examples of every benchmark, without the prompts held out for validation; refuses to train on
    none."""
    held_out = held_out_of_sft(ctx)
    examples = [
        example
        for benchmark in ctx.config.benchmark_names
        for example in _sft_examples(ctx, benchmark, held_out.get(benchmark, set()))
    ]
    if not examples:
        raise RuntimeError(
            "sft_student: no teacher response earned a good label; nothing to train on "
            "(check pseudo_labels coverage, or lower labeling.min_vote_share; "
            f"{n_validation} prompts are held out for validation by sft.validation_fraction)"
        )
    return examples
