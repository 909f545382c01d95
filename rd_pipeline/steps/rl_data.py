"""What rl_student trains and validates on, and the tables it fills: RL prompts split into training and
validation prompts, the SFT student's responses that standardise the reward model's scores, the ``rl_validation``
curve, the ``rl_rollouts`` record, and the ``reward_hacking`` check's comparison of the shipped student with the
SFT student."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.benchmarks.base import item_to_json
from rd_pipeline.evaluation.metrics import wilson_interval
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.training.rl_rollouts import ROLLOUTS_FILE  # torch-free: the trainer loads only in its job

REFERENCE_RESPONSES = 256  # SFT student responses scored to standardise the reward model


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rl_split(benchmark: str, prompt_id: str, validation_fraction: float) -> str:
    """``"validation"`` for a stable ``validation_fraction`` share of training prompts, else ``"train"``."""
    return (
        "validation" if _unit_hash(benchmark, "rl-validation", prompt_id) < validation_fraction else "train"
    )


def _vote_answers(ctx: StepContext, benchmark: str) -> dict[str, str]:
    """Each labelled prompt's majority answer (verifiable benchmarks only)."""
    if not get_benchmark(benchmark).verifiable:
        return {}
    return {
        row["prompt_id"]: row["prompt_answer"]
        for row in ctx.store.read("pseudo_labels", benchmark)
        if row["prompt_labelled"] and row["prompt_answer"] is not None
    }


def rl_prompts(ctx: StepContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every benchmark's training prompts as RL prompt records: (RL prompts, validation prompts). Validation
    prompts are a stable ``rl.validation_fraction`` of them, at most ``rl.max_validation_prompts``; the rest
    train (all of them when that would leave none)."""
    cfg = ctx.config.rl
    train: list[dict[str, Any]] = []
    validation: list[tuple[float, dict[str, Any]]] = []
    for benchmark in ctx.config.benchmark_names:
        votes = _vote_answers(ctx, benchmark)
        for row in read_prompts(ctx, benchmark, "train"):
            record = {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "benchmark": benchmark,
                "prompt_id": row["prompt_id"],
                "vote_answer": votes.get(row["prompt_id"]),
                "item": item_to_json(row_to_item(row)),
            }
            if rl_split(benchmark, row["prompt_id"], cfg.validation_fraction) == "validation":
                validation.append((_unit_hash(benchmark, "rl-order", row["prompt_id"]), record))
            else:
                train.append(record)
    validation.sort(key=lambda pair: pair[0])
    kept = [record for _, record in validation[: cfg.max_validation_prompts]]
    train += [record for _, record in validation[cfg.max_validation_prompts :]]
    if not train:  # too few prompts to hold any out
        return kept, []
    return train, kept


def reference_responses(ctx: StepContext) -> list[list[dict[str, str]]]:
    """A stable sample of the SFT student's own responses to training prompts, as conversations."""
    conversations: list[tuple[float, list[dict[str, str]]]] = []
    for benchmark in ctx.config.benchmark_names:
        prompts = {row["prompt_id"]: row["prompt"] for row in read_prompts(ctx, benchmark, "train")}
        for row in ctx.store.read("student_responses", benchmark):
            if row["prompt_id"] in prompts:
                key = _unit_hash(
                    benchmark, row["prompt_id"], str(row["temperature"]), str(row["sample_index"])
                )
                conversation = [
                    {"role": "user", "content": prompts[row["prompt_id"]]},
                    {"role": "assistant", "content": row["response"]},
                ]
                conversations.append((key, conversation))
    conversations.sort(key=lambda pair: pair[0])
    return [conversation for _, conversation in conversations[:REFERENCE_RESPONSES]]


def validation_rows(version: str, validation: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The ``rl_validation`` rows of a trained RL student, by benchmark: one per validation step."""
    rows: dict[str, list[dict[str, Any]]] = {}
    selected = validation.get("selected_step")
    for point in validation.get("curve", []):
        for benchmark, measures in point.get("benchmarks", {}).items():
            rows.setdefault(benchmark, []).append(
                {
                    "benchmark": benchmark,
                    "rl_version": version,
                    "step": point["step"],
                    **{key: measures.get(key) for key in _MEASURES},
                    "kl": point.get("kl"),
                    "selected": point["step"] == selected,
                }
            )
    return rows


_MEASURES = ("agreement", "agreement_n", "gold_accuracy", "gold_n", "mean_reward", "mean_length", "prompts")


def rollout_table_rows(version: str, checkpoint: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``rl_rollouts`` rows of a trained RL student (from its checkpoint's ``rollouts.jsonl``), by benchmark."""
    path = Path(checkpoint) / ROLLOUTS_FILE
    rows: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        rollout = json.loads(line)
        rows.setdefault(rollout["benchmark"], []).append(
            {
                "benchmark": rollout["benchmark"],
                "rl_version": version,
                "step": rollout["step"],
                "prompt_id": rollout["prompt_id"],
                "completion": rollout["completion"],
                "reward_model": rollout["rewards"].get("reward_model"),
                "vote_agreement": rollout["rewards"].get("vote_agreement"),
                "reward": rollout["reward"],
                "advantage": rollout["advantage"],
                "length": rollout["length"],
                "truncated": rollout["truncated"],
            }
        )
    return rows


def _point(curve: list[dict[str, Any]], step: int | None) -> dict[str, Any]:
    return next((point for point in curve if point["step"] == step), {})


def agreement_change(validation: dict[str, Any]) -> dict[str, Any]:
    """The shipped RL student against the SFT student (validation step 0): agreement and reward-model score at
    step 0, at the shipped step and at the last validation, and the 95% interval of the agreement difference
    (Newcombe's hybrid score interval from the two Wilson intervals)."""
    curve = validation.get("curve") or []
    start, shipped = _point(curve, 0), _point(curve, validation.get("selected_step"))
    last = curve[-1] if curve else {}
    change: dict[str, Any] = {
        "agreement_sft": start.get("agreement"),
        "agreement_shipped": shipped.get("agreement"),
        "agreement_last": last.get("agreement"),
        "reward_sft": start.get("mean_reward"),
        "reward_shipped": shipped.get("mean_reward"),
        "reward_last": last.get("mean_reward"),
        "shipped_step": validation.get("selected_step"),
        "last_step": last.get("step"),
        "validation_prompts": start.get("agreement_n"),
    }
    p0, p1, n = start.get("agreement"), shipped.get("agreement"), start.get("agreement_n") or 0
    if p0 is None or p1 is None or n == 0:
        return change | {"difference": None, "difference_ci_low": None, "difference_ci_high": None}
    low0, high0 = wilson_interval(round(p0 * n), n)
    low1, high1 = wilson_interval(round(p1 * n), n)
    difference = p1 - p0
    return change | {
        "difference": difference,
        "difference_ci_low": difference - math.sqrt((p1 - low1) ** 2 + (high0 - p0) ** 2),
        "difference_ci_high": difference + math.sqrt((high1 - p1) ** 2 + (p0 - low0) ** 2),
    }
