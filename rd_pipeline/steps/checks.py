"""Asset checks as plain functions of a step's typed result (``rd_pipeline.steps.results``) and the config.

They run before a step's writes are committed (see ``rd_pipeline.steps.commit``): with ``checks.enforce`` on, a failed
blocking check leaves the stored data as it was; checks listed in ``ALWAYS_BLOCKING`` refuse the commit even with
``enforce`` off, because what they catch (no prompts, a partition cut short) is never a usable table. The Dagster
layer (``rd_pipeline.defs.checks``) turns the same checks into asset-check specs and results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rd_pipeline.config import MODEL_ROLES, BenchmarkConfig, PipelineConfig, SamplingConfig
from rd_pipeline.steps.results import (
    OUTPUT_TYPES,
    BenchmarkPrompts,
    EvalScores,
    PartitionOutput,
    PseudoLabels,
    SampledResponses,
    StepOutput,
    TrainedModel,
    evaluation_only_fields,
)

CheckDetails = tuple[bool, dict[str, Any]]
CheckFn = Callable[
    [Any, PipelineConfig], CheckDetails
]  # (the asset's typed result, config) -> (passed, details)


def evaluation_only_metadata(benchmark: BenchmarkConfig, train_prompts: int) -> dict[str, Any]:
    """What a training-data partition (teacher or student samples, their labels) reports when its benchmark has
    no train prompts by configuration (``train_size: 0``, the default of an evaluation-only benchmark): its
    emptiness is expected, so its checks pass and say why. Nothing for a benchmark that has train prompts."""
    fields = evaluation_only_fields(benchmark, train_prompts)
    return {"train_prompts": 0, **fields} if fields else {}


def evaluation_only_benchmarks(config: PipelineConfig) -> list[str]:
    """The configured benchmarks with no train prompts (``train_size: 0``): nothing of theirs is trained on."""
    return [benchmark.name for benchmark in config.benchmarks if not benchmark.train_size]


def _not_empty(result: SampledResponses | PseudoLabels | BenchmarkPrompts, _: PipelineConfig) -> CheckDetails:
    if isinstance(result, PartitionOutput) and result.evaluation_only:
        return True, {"rows": result.rows, "evaluation_only": True}
    return result.rows > 0, {"rows": result.rows}


def _complete_samples(result: SampledResponses, config: PipelineConfig) -> CheckDetails:
    return _samples_match(result, config.sampling)


def _complete_student_samples(result: SampledResponses, config: PipelineConfig) -> CheckDetails:
    return _samples_match(result, config.student_sampling_settings())


def _samples_match(result: SampledResponses, sampling: SamplingConfig) -> CheckDetails:
    expected = result.prompts * sampling.n * len(sampling.temperatures)
    return result.rows == expected, {
        "rows": result.rows,
        "expected": expected,
        "budget_exhausted": result.budget_exhausted,
    }


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


def _reward_model_accuracy(result: TrainedModel, config: PipelineConfig) -> CheckDetails:
    accuracy = result.heldout_accuracy
    threshold = config.checks.min_reward_model_accuracy
    passed = accuracy is not None and accuracy == accuracy and accuracy > threshold
    return passed, {
        "heldout_accuracy": accuracy,
        "must_exceed": threshold,
        "heldout_pairs": result.heldout_pairs,
    }


def _no_eval_overlap(result: BenchmarkPrompts, _: PipelineConfig) -> CheckDetails:
    overlaps = result.train_eval_overlaps
    found = {name: count for name, count in (overlaps or {}).items() if count}
    return overlaps is not None and not found, {
        "overlapping_train_prompts": sum(found.values()) if overlaps is not None else None,
        "overlaps": ", ".join(f"{name}: {count}" for name, count in sorted(found.items())) or "none",
        "dropped_from_train": result.train_dropped_as_eval,
    }


def _eval_complete(result: EvalScores, _: PipelineConfig) -> CheckDetails:
    missing = [role for role in MODEL_ROLES if role not in result.scored_roles()]
    return not missing and result.eval_prompts > 0, {"missing_roles": ", ".join(missing) or "none"}


# asset -> [(check name, blocking, description, function)]
CHECKS: dict[str, list[tuple[str, bool, str, CheckFn]]] = {
    "benchmark_prompts": [
        ("not_empty", True, "the partition has prompts", _not_empty),
        (
            "no_eval_overlap",
            True,
            "no train prompt (or GSM-Plus seed question) is an eval question of a configured benchmark or a "
            "GSM8K test question",
            _no_eval_overlap,
        ),
    ],
    "teacher_responses": [
        ("not_empty", True, "the teacher answered", _not_empty),
        (
            "complete",
            True,
            "every prompt has n samples at each temperature (not cut short by the budget)",
            _complete_samples,
        ),
    ],
    "pseudo_labels": [
        ("not_empty", True, "responses were labelled", _not_empty),
        (
            "label_coverage",
            True,
            "label coverage and mean vote share reach the configured minima",
            _label_coverage,
        ),
        (
            "gold_label_accuracy",
            True,
            "where gold answers exist, labels agree with them at least checks.min_gold_label_accuracy",
            _gold_label_accuracy,
        ),
    ],
    "student_responses": [
        ("not_empty", True, "the student answered", _not_empty),
        (
            "complete",
            True,
            "every prompt has student_sampling.n samples at each of its temperatures",
            _complete_student_samples,
        ),
    ],
    "reward_model": [
        (
            "heldout_accuracy",
            True,
            "held-out pairwise accuracy is above the configured minimum",
            _reward_model_accuracy,
        ),
    ],
    "eval_scores": [("complete", False, "every model was scored", _eval_complete)],
}


# (asset, check) pairs that refuse the commit whatever ``checks.enforce`` says.
ALWAYS_BLOCKING: set[tuple[str, str]] = {
    ("benchmark_prompts", "not_empty"),
    ("teacher_responses", "complete"),
    ("student_responses", "complete"),
}


@dataclass(frozen=True)
class CheckOutcome:
    """One check evaluated on one step result."""

    asset: str
    name: str
    passed: bool
    blocking: bool
    refuses_commit: bool  # failed, and blocks the commit under the current config
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.details.items() if v is not None)
        return f"check {self.name} failed ({shown})" if shown else f"check {self.name} failed"


def evaluate_checks(
    asset: str, reported: StepOutput | dict[str, Any], config: PipelineConfig
) -> list[CheckOutcome]:
    """Every check of ``asset`` on a step's typed result (or on reported metadata, read back into that type), in
    declaration order."""
    checks = CHECKS.get(asset, [])
    if not checks:
        return []
    result = reported if isinstance(reported, StepOutput) else OUTPUT_TYPES[asset].from_metadata(reported)
    outcomes = []
    for name, blocking, description, check in checks:
        passed, details = check(result, config)
        enforced = blocking and (config.checks.enforce or (asset, name) in ALWAYS_BLOCKING)
        outcomes.append(
            CheckOutcome(asset, name, bool(passed), blocking, enforced and not passed, description, details)
        )
    return outcomes
