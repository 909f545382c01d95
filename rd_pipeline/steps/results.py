"""Typed step results: what each step made, as fields its checks read and ``to_metadata()`` shows.

Every field a check reads is a typed field with a default, so a check never parses metadata strings; ``details``
holds what is only shown. ``from_metadata`` reads reported metadata back (the checks accept either form).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from rd_pipeline.config import MODEL_ROLES
from rd_pipeline.evaluation.metrics import training_phase

EVALUATION_ONLY_NOTE = "train_prompts: 0 (evaluation-only)"


@dataclass(frozen=True, kw_only=True)
class StepOutput:
    """What a step reports: typed fields (in declaration order), then ``details`` (shown, never checked)."""

    details: dict[str, Any] = field(default_factory=dict)

    # Fields left out of the metadata while None (reported only by some benchmarks or settings).
    optional: ClassVar[frozenset[str]] = frozenset()

    def to_metadata(self) -> dict[str, Any]:
        metadata = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "details" or (value is None and spec.name in self.optional):
                continue
            metadata[spec.name] = value
        return metadata | self.details

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StepOutput:
        """The typed result of reported metadata: known keys fill fields, the rest are details."""
        names = {spec.name for spec in fields(cls)} - {"details"}
        known = {key: value for key, value in metadata.items() if key in names and value is not None}
        return cls(**known, details={k: v for k, v in metadata.items() if k not in names})


@dataclass(frozen=True, kw_only=True)
class PartitionOutput(StepOutput):
    """A training-data partition (samples or their labels); empty by configuration when its benchmark has no
    train prompts (``evaluation_only``), which its checks accept."""

    evaluation_only: bool = False
    note: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        metadata = super().to_metadata()
        metadata.pop("evaluation_only")
        metadata.pop("note")
        if self.evaluation_only:
            metadata |= {"train_prompts": 0, "evaluation_only": True, "note": self.note}
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StepOutput:
        evaluation_only = metadata.get("evaluation_only") is True and not metadata.get("train_prompts")
        rest = {k: v for k, v in metadata.items() if k != "evaluation_only"}
        return super().from_metadata(rest | {"evaluation_only": evaluation_only})


def evaluation_only_fields(benchmark: Any, train_prompts: int) -> dict[str, Any]:
    """``evaluation_only`` and ``note`` of a partition whose benchmark has no train prompts by configuration
    (``train_size: 0``); nothing for a benchmark that has train prompts."""
    if benchmark.train_size or train_prompts:
        return {}
    return {
        "evaluation_only": True,
        "note": f"{EVALUATION_ONLY_NOTE}: {benchmark.name} has no train prompts by configuration, so this "
        "partition is empty; eval_scores evaluates it",
    }


@dataclass(frozen=True, kw_only=True)
class BenchmarkPrompts(StepOutput):
    """benchmark_prompts: the selected train and eval prompts and what was kept out of training."""

    rows: int = 0
    train_prompts: int = 0
    eval_prompts: int = 0
    train_dropped_as_eval: int | None = None
    train_eval_overlaps: dict[str, int] | None = None


@dataclass(frozen=True, kw_only=True)
class SampledResponses(PartitionOutput):
    """teacher_responses or student_responses: samples, prompts, and whether the API budget cut them short."""

    rows: int = 0
    prompts: int = 0
    budget_exhausted: bool = False


@dataclass(frozen=True, kw_only=True)
class PseudoLabels(PartitionOutput):
    """pseudo_labels: label coverage, the labelled majorities' mean vote share and (with gold) their accuracy."""

    optional: ClassVar[frozenset[str]] = frozenset({"mean_vote_share", "n_labelled", "gold_label_accuracy"})

    rows: int = 0
    coverage: float = 0.0
    mean_vote_share: float | None = None
    n_labelled: int | None = None
    gold_label_accuracy: float | None = None


@dataclass(frozen=True, kw_only=True)
class RewardLabels(PartitionOutput):
    """reward_labels: reward pairs by split and how often the teacher's response is the chosen one."""

    pairs: int = 0
    train_pairs: int = 0
    heldout_pairs: int = 0
    chosen_teacher_share: float | None = None


# Metrics a trained model's metadata shows beside its scalar ones.
SHOWN_METRICS = (
    "per_step",
    "launch",
    "validation_curve",
    "selected_step",
    "selected_phase",
    "stopped_early_at",
)


def _validation_metadata(validation: Any, steps: Any) -> dict[str, Any]:
    """The validation curve, selected step (and where it falls in the ``steps`` trained: start, early, middle
    or late) and early stop of a trainer's ``validation`` metrics, if any."""
    if not isinstance(validation, dict):
        return {}
    selected = validation.get("selected_step")
    return {
        "validation_curve": validation.get("curve", []),
        "selected_step": selected,
        "selected_phase": training_phase(selected, steps if isinstance(steps, int) else None),
        "stopped_early_at": validation.get("stopped_early_at"),
    }


@dataclass(frozen=True, kw_only=True)
class TrainedModel(StepOutput):
    """sft_student, reward_model or rl_student: the checkpoint, its training metrics and lineage."""

    optional: ClassVar[frozenset[str]] = frozenset({"heldout_pairs", "teacher_versions"})

    path: str = ""
    trained_now: bool = False
    heldout_pairs: int | None = None
    teacher_versions: list[str] | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_accuracy(self) -> float | None:
        """Held-out pairwise accuracy of a reward model."""
        return self.metrics.get("heldout_accuracy")

    def to_metadata(self) -> dict[str, Any]:
        """The fields, the scalar metrics, per-step values, the launch and the validation (curve, selected
        step and its phase of training, early stop) of a model that was validated."""
        metadata = super().to_metadata()
        metadata.pop("metrics")
        validation = _validation_metadata(self.metrics.get("validation"), self.metrics.get("steps"))
        metrics = self.metrics | validation
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        return metadata | scalars | {k: metrics[k] for k in SHOWN_METRICS if k in metrics}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StepOutput:
        names = {spec.name for spec in fields(cls)}
        metrics = {k: v for k, v in metadata.items() if k not in names}
        known = {k: v for k, v in metadata.items() if k in names and v is not None}
        return cls(**known, metrics=metrics)


@dataclass(frozen=True, kw_only=True)
class EvalScores(StepOutput):
    """eval_scores: each model's scores (``<role>_<metric>``) on the partition's eval prompts, the evaluation key
    they were made under, and (a forced re-evaluation) each score compared with the one stored under that key."""

    optional: ClassVar[frozenset[str]] = frozenset({"drift"})

    eval_prompts: int = 0
    samples_generated: int = 0
    reused: bool = False
    eval_key: str = ""
    refreshed: bool = False
    drift: list[dict[str, Any]] | None = None  # per model and metric: old, new, interval, drifted
    scores: dict[str, float] = field(default_factory=dict)

    def scored_roles(self) -> set[str]:
        return {role for role in MODEL_ROLES if any(key.startswith(f"{role}_") for key in self.scores)}

    def to_metadata(self) -> dict[str, Any]:
        metadata = super().to_metadata()
        return metadata | metadata.pop("scores")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> StepOutput:
        roles = tuple(f"{role}_" for role in MODEL_ROLES)
        scores = {k: v for k, v in metadata.items() if k.startswith(roles)}
        names = {spec.name for spec in fields(cls)} - {"details", "scores"}
        known = {k: v for k, v in metadata.items() if k in names and v is not None}
        rest = {k: v for k, v in metadata.items() if k not in names and k not in scores}
        return cls(**known, scores=scores, details=rest)


@dataclass(frozen=True, kw_only=True)
class JudgeAudit(PartitionOutput):
    """judge_audit: the pairs audited and, over every audited judge, the worst of each checked metric (None where
    nothing was measured): the lowest swap consistency and gold agreement, the share of first-position wins
    farthest from 0.5 and the length bias farthest from 0."""

    optional: ClassVar[frozenset[str]] = frozenset(
        {"worst_swap_consistency", "worst_position_bias", "worst_gold_agreement", "worst_length_bias"}
    )

    pairs: int = 0
    gold_pairs: int = 0
    judges: list[str] = field(default_factory=list)
    samples_generated: int = 0
    worst_swap_consistency: float | None = None
    worst_position_bias: float | None = None
    worst_gold_agreement: float | None = None
    worst_length_bias: float | None = None


# The typed result of each asset's step (assets not listed report plain metadata and have no checks).
OUTPUT_TYPES: dict[str, type[StepOutput]] = {
    "benchmark_prompts": BenchmarkPrompts,
    "teacher_responses": SampledResponses,
    "student_responses": SampledResponses,
    "pseudo_labels": PseudoLabels,
    "reward_labels": RewardLabels,
    "sft_student": TrainedModel,
    "reward_model": TrainedModel,
    "rl_student": TrainedModel,
    "eval_scores": EvalScores,
    "judge_audit": JudgeAudit,
}
