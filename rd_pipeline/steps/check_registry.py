"""Asset checks: how they are declared, the one registry of them, and their evaluation on a step's typed result.

Each asset's checks are plain functions of its step's typed result (``rd_pipeline.steps.results``) and the config,
declared as ``AssetCheck`` values next to the step in its own module and passed to its ``@committed(asset,
checks=...)`` (``rd_pipeline.steps.commit``), which registers them here. They run before a step's writes are
committed: with ``checks.enforce`` on, a failed blocking check leaves the stored data as it was; a check declared
``always_blocking`` refuses the commit even with ``enforce`` off, because what it catches (no prompts, a partition
cut short) is never a usable table. ``CHECKS`` imports the step modules on first use, so it is complete whoever
reads it first; the Dagster layer (``rd_pipeline.defs.checks``) turns the same checks into asset-check specs and
results. This module keeps only what several assets share.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rd_pipeline.config import BenchmarkConfig, PipelineConfig, SamplingConfig
from rd_pipeline.steps.results import (
    OUTPUT_TYPES,
    BenchmarkPrompts,
    PartitionOutput,
    PseudoLabels,
    SampledResponses,
    StepOutput,
    evaluation_only_fields,
)

CheckDetails = tuple[bool, dict[str, Any]]
CheckFn = Callable[
    [Any, PipelineConfig], CheckDetails
]  # (the asset's typed result, config) -> (passed, details)

# The step modules that declare asset checks, in the order of the asset graph (the order of ``CHECKS``).
CHECKED_STEP_MODULES = (
    "rd_pipeline.steps.prompts",
    "rd_pipeline.steps.teacher",
    "rd_pipeline.steps.pseudo_labels",
    "rd_pipeline.steps.sft_student",
    "rd_pipeline.steps.student_responses",
    "rd_pipeline.steps.reward_model",
    "rd_pipeline.steps.rl_student",
    "rd_pipeline.steps.eval_scores",
    "rd_pipeline.steps.judge_audit",
)


@dataclass(frozen=True)
class AssetCheck:
    """One check of an asset, declared next to the asset's step."""

    name: str
    blocking: bool
    description: str
    evaluate: CheckFn
    always_blocking: bool = False  # refuses the commit even with checks.enforce off
    # A boolean field of the config's ``checks`` section that makes this check blocking when true.
    blocking_setting: str | None = None

    def is_blocking(self, config: PipelineConfig) -> bool:
        """Whether the check is blocking under ``config`` (declared so, or made so by its setting)."""
        return self.blocking or bool(self.blocking_setting and getattr(config.checks, self.blocking_setting))


def evaluation_only_metadata(benchmark: BenchmarkConfig, train_prompts: int) -> dict[str, Any]:
    """What a training-data partition (teacher or student samples, their labels) reports when its benchmark has
    no train prompts by configuration (``train_size: 0``, the default of an evaluation-only benchmark): its
    emptiness is expected, so its checks pass and say why. Nothing for a benchmark that has train prompts."""
    fields = evaluation_only_fields(benchmark, train_prompts)
    return {"train_prompts": 0, **fields} if fields else {}


def evaluation_only_benchmarks(config: PipelineConfig) -> list[str]:
    """The configured benchmarks with no train prompts (``train_size: 0``): nothing of theirs is trained on."""
    return [benchmark.name for benchmark in config.benchmarks if not benchmark.train_size]


def not_empty(result: SampledResponses | PseudoLabels | BenchmarkPrompts, _: PipelineConfig) -> CheckDetails:
    """The partition has rows, or is an evaluation-only partition that is empty by configuration."""
    if isinstance(result, PartitionOutput) and result.evaluation_only:
        return True, {"rows": result.rows, "evaluation_only": True}
    return result.rows > 0, {"rows": result.rows}


def samples_match(result: SampledResponses, sampling: SamplingConfig) -> CheckDetails:
    """Every prompt has ``sampling.n`` samples at each of its temperatures."""
    expected = result.prompts * sampling.n * len(sampling.temperatures)
    return result.rows == expected, {
        "rows": result.rows,
        "expected": expected,
        "budget_exhausted": result.budget_exhausted,
    }


def sampled_responses_checks(
    answerer: str, complete_description: str, sampling: Callable[[PipelineConfig], SamplingConfig]
) -> tuple[AssetCheck, ...]:
    """The checks of a partition of sampled responses (teacher or student): it has rows, and every prompt has its
    samples under ``sampling(config)`` (always blocking: a partition cut short is never a usable table)."""

    def complete(result: SampledResponses, config: PipelineConfig) -> CheckDetails:
        return samples_match(result, sampling(config))

    return (
        AssetCheck("not_empty", True, f"the {answerer} answered", not_empty),
        AssetCheck("complete", True, complete_description, complete, always_blocking=True),
    )


_DECLARED: dict[str, tuple[str, tuple[AssetCheck, ...]]] = {}  # asset -> (declaring module, its checks)


def declare_checks(asset: str, checks: Iterable[AssetCheck], module: str) -> None:
    """Register ``asset``'s checks, declared in step module ``module`` (one of ``CHECKED_STEP_MODULES``)."""
    if module not in CHECKED_STEP_MODULES:
        raise ValueError(
            f"checks of {asset} are declared in {module}, which is not in CHECKED_STEP_MODULES "
            "(rd_pipeline/steps/check_registry.py): add it there so the registry loads it"
        )
    declared = _DECLARED.get(asset)
    if declared is not None and declared[0] != module:
        raise ValueError(f"checks of {asset} are declared in both {declared[0]} and {module}")
    _DECLARED[asset] = (module, tuple(checks))


class CheckRegistry(Mapping[str, tuple[AssetCheck, ...]]):
    """asset -> its checks in declaration order, for every asset with checks; loads the step modules on first use."""

    def _checks(self) -> dict[str, tuple[AssetCheck, ...]]:
        for module in CHECKED_STEP_MODULES:
            importlib.import_module(module)
        by_module = sorted(_DECLARED.items(), key=lambda item: CHECKED_STEP_MODULES.index(item[1][0]))
        return {asset: checks for asset, (_, checks) in by_module}

    def __getitem__(self, asset: str) -> tuple[AssetCheck, ...]:
        if asset in _DECLARED:  # its step module is loaded already: no need to load the others
            return _DECLARED[asset][1]
        return self._checks()[asset]

    def __iter__(self) -> Iterator[str]:
        return iter(self._checks())

    def __len__(self) -> int:
        return len(self._checks())


CHECKS = CheckRegistry()


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

    def summary(self, named: bool = True) -> str:
        """``check NAME failed (details)``; with ``named`` off, ``NAME (details)``."""
        shown = ", ".join(f"{k}={v}" for k, v in self.details.items() if v is not None)
        head = f"check {self.name} failed" if named else self.name
        return f"{head} ({shown})" if shown else head


def evaluate_checks(
    asset: str, reported: StepOutput | dict[str, Any], config: PipelineConfig
) -> list[CheckOutcome]:
    """Every check of ``asset`` on a step's typed result (or on reported metadata, read back into that type), in
    declaration order."""
    checks = CHECKS.get(asset, ())
    if not checks:
        return []
    result = reported if isinstance(reported, StepOutput) else OUTPUT_TYPES[asset].from_metadata(reported)
    outcomes = []
    for check in checks:
        passed, details = check.evaluate(result, config)
        blocking = check.is_blocking(config)
        enforced = blocking and (config.checks.enforce or check.always_blocking)
        outcomes.append(
            CheckOutcome(
                asset,
                check.name,
                bool(passed),
                blocking,
                enforced and not passed,
                check.description,
                details,
            )
        )
    return outcomes
