"""Held-out validation of sft_student and rl_student: training prompts split into training and validation
prompts per stage, the validation curve's table rows (``sft_validation``, ``rl_validation``), and the shipped
model's validation agreement against the model the stage started from (step 0).

Both stages draw their validation prompts from one stable order of the training prompts, in disjoint shares: RL
holds out the first ``rl.validation_fraction`` of it, SFT the next ``sft.validation_fraction``, and SFT trains on
neither share. RL's validation prompts are then prompts neither stage trained on (on prompts SFT had learnt by heart,
an RL student could never beat its step 0) and that SFT's checkpoint selection did not look at: the SFT student is
the best of several checkpoints on SFT's validation prompts, so on those prompts its agreement is biased upwards by
the selection itself, and RL (whose step 0 is that student) would be measured against a score it can rarely beat.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.benchmarks.base import item_to_json
from rd_pipeline.benchmarks.records import unit_hash
from rd_pipeline.config import PipelineConfig
from rd_pipeline.evaluation.metrics import wilson_interval
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import read_prompts, row_to_item

ValidatedStage = Literal["sft", "rl"]
# Measures of one validation step and benchmark, as the validator reports them and the tables store them.
MEASURES = (
    "agreement",
    "agreement_n",
    "win_rate",
    "win_n",
    "gold_accuracy",
    "gold_n",
    "mean_reward",
    "mean_length",
    "prompts",
)


def validation_split(benchmark: str, prompt_id: str, fraction: float, start: float = 0.0) -> str:
    """``"validation"`` for the prompts whose stable hash falls in [``start``, ``start + fraction``) (a
    ``fraction`` share of training prompts), else ``"train"``; a smaller fraction from the same start holds out a
    subset of what a larger one does."""
    position = unit_hash(benchmark, "validation", prompt_id)
    return "validation" if start <= position < start + fraction else "train"


def validation_share(config: PipelineConfig, stage: ValidatedStage) -> tuple[float, float]:
    """Where ``stage``'s validation prompts start in the stable order, and what share they take: RL's first,
    SFT's right after, so the two never overlap."""
    if stage == "rl":
        return 0.0, config.rl.validation_fraction
    return config.rl.validation_fraction, config.sft.validation_fraction


def vote_answers(ctx: StepContext, benchmark: str) -> dict[str, str]:
    """Each labelled prompt's majority answer (verifiable benchmarks only)."""
    if not get_benchmark(benchmark).verifiable:
        return {}
    return {
        row["prompt_id"]: row["prompt_answer"]
        for row in ctx.store.read("pseudo_labels", benchmark)
        if row["prompt_labelled"] and row["prompt_answer"] is not None
    }


def split_prompts(
    ctx: StepContext, stage: ValidatedStage
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every benchmark's training prompts as prompt records {"prompt", "benchmark", "prompt_id", "vote_answer",
    "item"}: (training prompts, validation prompts) of ``stage``. Validation prompts are a stable
    ``<stage>.validation_fraction`` of them (see ``validation_share``), at most ``<stage>.max_validation_prompts``;
    the rest train (all of them when that would leave none)."""
    cfg = getattr(ctx.config, stage)
    start, fraction = validation_share(ctx.config, stage)
    train: list[dict[str, Any]] = []
    validation: list[tuple[float, dict[str, Any]]] = []
    for benchmark in ctx.config.benchmark_names:
        votes = vote_answers(ctx, benchmark)
        for row in read_prompts(ctx, benchmark, "train"):
            record = {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "benchmark": benchmark,
                "prompt_id": row["prompt_id"],
                "vote_answer": votes.get(row["prompt_id"]),
                "item": item_to_json(row_to_item(row)),
            }
            if validation_split(benchmark, row["prompt_id"], fraction, start) == "validation":
                # ordered by the split's own hash, so a smaller cap keeps a subset of what a larger one keeps
                validation.append((unit_hash(benchmark, "validation", row["prompt_id"]), record))
            else:
                train.append(record)
    validation.sort(key=lambda pair: pair[0])
    kept = [record for _, record in validation[: cfg.max_validation_prompts]]
    train += [record for _, record in validation[cfg.max_validation_prompts :]]
    if not train:  # too few prompts to hold any out
        return kept, []
    return train, kept


def held_out_of_sft(ctx: StepContext) -> dict[str, set[str]]:
    """The prompt ids, by benchmark, whose teacher responses SFT must not train on: its own validation prompts
    and RL's (so RL is validated against the SFT student on prompts neither learnt by heart, nor selected on)."""
    held_out: dict[str, set[str]] = {}
    for record in split_prompts(ctx, "sft")[1] + split_prompts(ctx, "rl")[1]:
        held_out.setdefault(record["benchmark"], set()).add(record["prompt_id"])
    return held_out


def validation_rows(
    stage: ValidatedStage, version: str, validation: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """The ``<stage>_validation`` rows of a trained model (its ``validation`` metrics), by benchmark: one per
    validation step."""
    rows: dict[str, list[dict[str, Any]]] = {}
    selected = validation.get("selected_step")
    for point in validation.get("curve", []):
        for benchmark, measures in point.get("benchmarks", {}).items():
            rows.setdefault(benchmark, []).append(
                {
                    "benchmark": benchmark,
                    f"{stage}_version": version,
                    "step": point["step"],
                    **{key: measures.get(key) for key in MEASURES},
                    "kl": point.get("kl"),
                    "selected": point["step"] == selected,
                }
            )
    return rows


def has_open_ended(validation: list[dict[str, Any]]) -> bool:
    """Whether any validation prompt record is of an open-ended benchmark (judged against the base student)."""
    return any(not get_benchmark(record["benchmark"]).verifiable for record in validation)


def _point(curve: list[dict[str, Any]], step: int | None) -> dict[str, Any]:
    return next((point for point in curve if point["step"] == step), {})


def agreement_change(validation: dict[str, Any], start: str) -> dict[str, Any]:
    """The shipped model against the model its stage started from (validation step 0, named ``start``):
    agreement (and the reward-model score, where measured) at step 0, at the shipped step and at the last
    validation, and the 95% interval of the agreement difference (Newcombe's hybrid score interval from the two
    Wilson intervals)."""
    curve = validation.get("curve") or []
    first, shipped = _point(curve, 0), _point(curve, validation.get("selected_step"))
    last = curve[-1] if curve else {}
    change: dict[str, Any] = {
        f"agreement_{start}": first.get("agreement"),
        "agreement_shipped": shipped.get("agreement"),
        "agreement_last": last.get("agreement"),
    }
    if any(point.get("mean_reward") is not None for point in curve):
        change |= {
            f"reward_{start}": first.get("mean_reward"),
            "reward_shipped": shipped.get("mean_reward"),
            "reward_last": last.get("mean_reward"),
        }
    change |= {
        "shipped_step": validation.get("selected_step"),
        "last_step": last.get("step"),
        "validation_prompts": first.get("agreement_n"),
    }
    p0, p1, n = first.get("agreement"), shipped.get("agreement"), first.get("agreement_n") or 0
    if p0 is None or p1 is None or n == 0:
        return change | _NO_DIFFERENCE
    return change | _newcombe(p0, p1, n)


_NO_DIFFERENCE = {"difference": None, "difference_ci_low": None, "difference_ci_high": None}


def _newcombe(p0: float, p1: float, n: int) -> dict[str, float]:
    """``p1 - p0`` with the 95% interval of Newcombe's hybrid score method (two Wilson intervals on ``n``)."""
    low0, high0 = wilson_interval(round(p0 * n), n)
    low1, high1 = wilson_interval(round(p1 * n), n)
    difference = p1 - p0
    return {
        "difference": difference,
        "difference_ci_low": difference - math.sqrt((p1 - low1) ** 2 + (high0 - p0) ** 2),
        "difference_ci_high": difference + math.sqrt((high1 - p1) ** 2 + (p0 - low0) ** 2),
    }


def score_change(validation: dict[str, Any], start: str) -> dict[str, Any]:
    """The shipped model against step 0 (named ``start``) on the measure that selected it.

    Agreement alone (``selection_metric`` "agreement" or unset): ``agreement_change``. Win rate against the
    base student alone ("win_rate"): step 0 is 0.5 by construction, not an estimate, so the difference is the
    shipped win rate minus 0.5 with the shipped win rate's own Wilson interval (ties and soft preferences as half
    credit). Both ("combined_score", the mean of per-prompt scores): Newcombe's interval of the score difference, the
    score treated as a share of ``combined_n`` prompts, as agreement is."""
    metric = validation.get("selection_metric") or "agreement"
    if metric not in ("win_rate", "combined_score"):
        return agreement_change(validation, start)
    curve = validation.get("curve") or []
    first, shipped = _point(curve, 0), _point(curve, validation.get("selected_step"))
    change = agreement_change(validation, start) if metric == "combined_score" else {}
    value, count = ("win_rate", "win_n") if metric == "win_rate" else ("combined_score", "combined_n")
    change |= {
        "selection_metric": metric,
        f"{value}_{start}": first.get(value),
        f"{value}_shipped": shipped.get(value),
        f"{value}_last": curve[-1].get(value) if curve else None,
        "shipped_step": validation.get("selected_step"),
        "last_step": curve[-1].get("step") if curve else None,
        f"{count}_shipped": shipped.get(count),
    }
    p0, p1, n = first.get(value), shipped.get(value), shipped.get(count) or 0
    if p0 is None or p1 is None or n == 0:
        return change | _NO_DIFFERENCE
    if metric == "combined_score":
        return change | _newcombe(p0, p1, n)
    low, high = wilson_interval(min(float(n), p1 * n), n)
    return change | {"difference": p1 - 0.5, "difference_ci_low": low - 0.5, "difference_ci_high": high - 0.5}
