"""Metrics read from a trainer: its batch, losses and per-step values from its log history."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def batch_metrics(trainer) -> dict[str, Any]:
    """The batch a trainer's optimizer steps saw, over all processes, and whether activations were recomputed."""
    args = trainer.args
    return {
        "global_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * args.world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_checkpointing": bool(
            getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None)
        ),
    }


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def step_values(log_history: Sequence[dict], key: str) -> list[float]:
    """The finite values of ``key`` in the per-step log entries, in step order."""
    return [v for entry in log_history if "step" in entry and (v := _finite(entry.get(key))) is not None]


def loss_metrics(log_history: Sequence[dict]) -> dict[str, Any]:
    """train_loss (the mean over training, as the trainer reports it), first and final step loss, runtime."""
    summary = next((entry for entry in reversed(log_history) if "train_loss" in entry), {})
    losses = step_values(log_history, "loss")
    train_loss = _finite(summary.get("train_loss"))
    if train_loss is None and losses:
        train_loss = sum(losses) / len(losses)
    return {
        "train_loss": train_loss,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "trainer_runtime_s": _finite(summary.get("train_runtime")),
    }


def per_step_metrics(log_history: Sequence[dict], keys: Sequence[str]) -> list[dict[str, float]]:
    """One entry per logged training step: the step number and the finite values of ``keys`` it logged."""
    rows = []
    for entry in log_history:
        if "step" not in entry or "train_loss" in entry:
            continue
        values = {key: v for key in keys if (v := _finite(entry.get(key))) is not None}
        if values:
            rows.append({"step": entry["step"], **values})
    return rows
