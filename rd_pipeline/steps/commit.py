"""One place where a step's table writes reach the store: staged, checked, then committed in one transaction.

A step decorated with ``@committed("asset", checks=...)`` stages its writes (``ctx.stage``,
``ctx.record_version``); when it returns, the asset's checks (declared with the step) run on what it reports, and only
if no blocking check fails are the staged rows and the version record committed together (``Store.commit``).
Otherwise ``CommitRefused`` is raised and the store keeps the previous version untouched. Generated samples are in the
journal already, so a refused partition (for example one cut short by the API budget) is resumed by the next run
without repeating a request. The Dagster layer and a plain call of the step go through the same path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rd_pipeline.steps.check_registry import CHECKS, AssetCheck, CheckOutcome, declare_checks, evaluate_checks
from rd_pipeline.steps.context import StepContext, StepResult
from rd_pipeline.steps.results import SampledResponses, StepOutput
from rd_pipeline.store import StagedWrites

StepFn = TypeVar("StepFn", bound=Callable[..., StepResult])


class CommitRefused(RuntimeError):
    """A step's blocking checks failed; nothing it made was stored. ``outcomes`` holds every check evaluated."""

    def __init__(
        self, asset: str, benchmark: str, outcomes: list[CheckOutcome], cause: str, kept: str
    ) -> None:
        self.asset = asset
        self.benchmark = benchmark
        self.outcomes = outcomes
        self.refused = [outcome for outcome in outcomes if outcome.refuses_commit]
        where = f"{asset}[{benchmark}]" if benchmark else asset
        super().__init__(f"{where}: {cause}; {kept}")


def failed_checks_text(refused: Sequence[CheckOutcome]) -> str:
    """Every failed check, each with its details, in the order the asset declares its checks (whichever failed
    first): ``check a failed (x=1)`` for one, ``checks a, b failed: a (x=1); b (y=2)`` for several."""
    declared = [check.name for check in CHECKS.get(refused[0].asset, ())] if refused else []
    refused = sorted(refused, key=lambda o: declared.index(o.name) if o.name in declared else len(declared))
    if len(refused) == 1:
        return refused[0].summary()
    names = ", ".join(outcome.name for outcome in refused)
    return f"checks {names} failed: " + "; ".join(outcome.summary(named=False) for outcome in refused)


def _cause(refused: list[CheckOutcome], reported: StepOutput | dict[str, Any]) -> str:
    """What went wrong, in words; a budget stop is said as such rather than as an incomplete table."""
    if isinstance(reported, SampledResponses) and reported.budget_exhausted:
        others = [outcome for outcome in refused if outcome.name != "complete"]
        budget = (
            f"stopped at the API budget limit with {reported.rows} of "
            f"{next((o.details.get('expected') for o in refused if o.name == 'complete'), '?')} samples "
            "(kept in the journal: the next run with a larger budget generates only the rest)"
        )
        return "; ".join([budget] + ([failed_checks_text(others)] if others else []))
    return failed_checks_text(refused)


def _kept(ctx: StepContext, asset: str, benchmark: str) -> str:
    previous = ctx.store.latest_version(asset, benchmark)
    if previous is None:
        return "nothing was stored"
    return (
        f"stored data unchanged (still version {previous['data_version']} from run {previous['run_id'][:8]})"
    )


def commit_step(
    ctx: StepContext, asset: str, benchmark: str, result: StepResult, staged: StagedWrites
) -> None:
    """Evaluate ``asset``'s checks on ``result``; commit ``staged`` if none refuses, else raise ``CommitRefused``."""
    result.checks = evaluate_checks(asset, result.reported, ctx.config)
    refused = [outcome for outcome in result.checks if outcome.refuses_commit]
    if refused:
        raise CommitRefused(
            asset, benchmark, result.checks, _cause(refused, result.reported), _kept(ctx, asset, benchmark)
        )
    ctx.store.commit(staged)


def committed(asset: str, checks: Sequence[AssetCheck] = ()) -> Callable[[StepFn], StepFn]:
    """Make a step stage its writes and commit them only when ``asset``'s blocking checks pass; ``checks`` are the
    asset's checks, declared next to the step and registered in ``rd_pipeline.steps.check_registry.CHECKS``."""

    def decorate(make: StepFn) -> StepFn:
        if checks:
            declare_checks(asset, checks, make.__module__)

        @functools.wraps(make)
        def run(ctx: StepContext, *partition: str) -> StepResult:
            staged = StagedWrites()
            ctx.staged = staged
            try:
                result = make(ctx, *partition)
            finally:
                ctx.staged = None
            commit_step(ctx, asset, partition[0] if partition else "", result, staged)
            return result

        return run  # type: ignore[return-value]

    return decorate
