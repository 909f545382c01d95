"""Asset checks as plain functions of a step's reported metadata and the config.

They run before a step's writes are committed (see ``rd_pipeline.steps.staging``): with ``checks.enforce`` on, a failed
blocking check leaves the stored data as it was; checks listed in ``ALWAYS_BLOCKING`` refuse the commit even with
``enforce`` off, because what they catch (no prompts, a partition cut short) is never a usable table. The Dagster
layer (``rd_pipeline.defs.checks``) turns the same checks into asset-check specs and results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rd_pipeline.config import MODEL_ROLES, BenchmarkConfig, PipelineConfig, SamplingConfig

CheckFn = Callable[[dict[str, Any], PipelineConfig], tuple[bool, dict[str, Any]]]

EVALUATION_ONLY_NOTE = "train_prompts: 0 (evaluation-only)"


def evaluation_only_metadata(benchmark: BenchmarkConfig, train_prompts: int) -> dict[str, Any]:
    """What a training-data partition (teacher or student samples, their labels) reports when its benchmark has
    no train prompts by configuration (``train_size: 0``, the default of an evaluation-only benchmark): its
    emptiness is expected, so its checks pass and say why. Nothing for a benchmark that has train prompts."""
    if benchmark.train_size or train_prompts:
        return {}
    return {
        "train_prompts": 0,
        "evaluation_only": True,
        "note": f"{EVALUATION_ONLY_NOTE}: {benchmark.name} has no train prompts by configuration, so this "
        "partition is empty; eval_scores evaluates it",
    }


def evaluation_only_benchmarks(config: PipelineConfig) -> list[str]:
    """The configured benchmarks with no train prompts (``train_size: 0``): nothing of theirs is trained on."""
    return [benchmark.name for benchmark in config.benchmarks if not benchmark.train_size]


def _evaluation_only(metadata: dict[str, Any]) -> bool:
    """A partition empty by configuration (see ``evaluation_only_metadata``), not one that produced nothing."""
    return metadata.get("evaluation_only") is True and not metadata.get("train_prompts")


def _not_empty(metadata: dict[str, Any], _: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    rows = metadata.get("rows") or 0
    if _evaluation_only(metadata):
        return True, {"rows": rows, "evaluation_only": True}
    return rows > 0, {"rows": rows}


def _complete_samples(metadata: dict[str, Any], config: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    return _samples_match(metadata, config.sampling)


def _complete_student_samples(
    metadata: dict[str, Any], config: PipelineConfig
) -> tuple[bool, dict[str, Any]]:
    return _samples_match(metadata, config.student_sampling_settings())


def _samples_match(metadata: dict[str, Any], sampling: SamplingConfig) -> tuple[bool, dict[str, Any]]:
    expected = (metadata.get("prompts") or 0) * sampling.n * len(sampling.temperatures)
    rows = metadata.get("rows") or 0
    return rows == expected, {
        "rows": rows,
        "expected": expected,
        "budget_exhausted": bool(metadata.get("budget_exhausted")),
    }


def _label_coverage(metadata: dict[str, Any], config: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    coverage = metadata.get("coverage") or 0.0
    share = metadata.get("mean_vote_share")
    minima = config.checks
    passed = coverage >= minima.min_label_coverage and (share is None or share >= minima.min_mean_vote_share)
    details = {
        "coverage": coverage,
        "min_coverage": minima.min_label_coverage,
        "mean_vote_share": share,
        "min_mean_vote_share": minima.min_mean_vote_share,
    }
    if _evaluation_only(metadata):
        return True, details | {"evaluation_only": True}
    return passed, details


def _gold_label_accuracy(metadata: dict[str, Any], config: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    accuracy = metadata.get("gold_label_accuracy")
    threshold = config.checks.min_gold_label_accuracy
    passed = accuracy is None or accuracy >= threshold  # open-ended benchmarks have no gold to compare with
    return passed, {
        "gold_label_accuracy": accuracy,
        "min_gold_label_accuracy": threshold,
        "labelled_prompts": metadata.get("n_labelled"),
    }


def _reward_model_accuracy(metadata: dict[str, Any], config: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    accuracy = metadata.get("heldout_accuracy")
    threshold = config.checks.min_reward_model_accuracy
    passed = accuracy is not None and accuracy == accuracy and accuracy > threshold
    return passed, {
        "heldout_accuracy": accuracy,
        "must_exceed": threshold,
        "heldout_pairs": metadata.get("heldout_pairs"),
    }


def _no_eval_overlap(metadata: dict[str, Any], _: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    overlaps = metadata.get("train_eval_overlaps")
    found = {name: count for name, count in (overlaps or {}).items() if count}
    return overlaps is not None and not found, {
        "overlapping_train_prompts": sum(found.values()) if overlaps is not None else None,
        "overlaps": ", ".join(f"{name}: {count}" for name, count in sorted(found.items())) or "none",
        "dropped_from_train": metadata.get("train_dropped_as_eval"),
    }


def _eval_complete(metadata: dict[str, Any], _: PipelineConfig) -> tuple[bool, dict[str, Any]]:
    missing = [role for role in MODEL_ROLES if not any(key.startswith(f"{role}_") for key in metadata)]
    return not missing and (metadata.get("eval_prompts") or 0) > 0, {
        "missing_roles": ", ".join(missing) or "none"
    }


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


def evaluate_checks(asset: str, metadata: dict[str, Any], config: PipelineConfig) -> list[CheckOutcome]:
    """Every check of ``asset`` on a step's metadata, in declaration order."""
    outcomes = []
    for name, blocking, description, check in CHECKS.get(asset, []):
        passed, details = check(metadata, config)
        enforced = blocking and (config.checks.enforce or (asset, name) in ALWAYS_BLOCKING)
        outcomes.append(
            CheckOutcome(asset, name, bool(passed), blocking, enforced and not passed, description, details)
        )
    return outcomes
