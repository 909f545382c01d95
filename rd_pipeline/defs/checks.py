"""Asset checks, evaluated from what each step reports and attached to its materialization.

The checks themselves are plain functions declared next to each asset's step, in its ``rd_pipeline.steps``
module, and registered in ``rd_pipeline.steps.check_registry.CHECKS`` (add a new one to its asset's ``<ASSET>_CHECKS``
there); they run before a step's writes are committed, so a failed blocking check leaves the stored data unchanged
and fails the step, which stops downstream steps: bad labels never reach SFT, and a reward model no better than
chance never drives RL.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.steps.check_registry import CHECKS, CheckOutcome, evaluate_checks

__all__ = ["CHECKS", "check_results", "check_specs", "outcome_evaluations", "outcome_results"]


def check_specs(asset: str, config: PipelineConfig | None = None) -> list[dg.AssetCheckSpec]:
    """``asset``'s check specs; a check made blocking by a setting (``blocking_setting``) is blocking when
    ``config`` sets it."""
    return [
        dg.AssetCheckSpec(
            check.name,
            asset=asset,
            blocking=check.is_blocking(config) if config is not None else check.blocking,
            description=check.description,
        )
        for check in CHECKS.get(asset, ())
    ]


def outcome_results(outcomes: list[CheckOutcome], config: PipelineConfig) -> list[dg.AssetCheckResult]:
    """Dagster check results for outcomes already evaluated; a failed blocking check is an error when checks are
    enforced (or it refuses the commit anyway), any other failure a warning."""
    results = []
    for outcome in outcomes:
        error = outcome.refuses_commit or (config.checks.enforce and outcome.blocking)
        results.append(
            dg.AssetCheckResult(
                check_name=outcome.name,
                asset_key=outcome.asset,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
                metadata={
                    k: (dg.MetadataValue.null() if v is None else v) for k, v in outcome.details.items()
                },
            )
        )
    return results


def outcome_evaluations(
    outcomes: list[CheckOutcome], config: PipelineConfig
) -> list[dg.AssetCheckEvaluation]:
    """The same outcomes as check evaluations to log from a step that stores nothing (its commit was refused), so
    the UI shows which check failed."""
    return [
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(result.asset_key.path),
            check_name=result.check_name,
            passed=result.passed,
            metadata=result.metadata,
            severity=result.severity,
            blocking=outcome.blocking,
        )
        for outcome, result in zip(outcomes, outcome_results(outcomes, config), strict=True)
    ]


def check_results(asset: str, metadata: dict[str, Any], config: PipelineConfig) -> list[dg.AssetCheckResult]:
    """Evaluate an asset's checks on its step metadata; failures are errors only when checks are enforced."""
    return outcome_results(evaluate_checks(asset, metadata, config), config)
