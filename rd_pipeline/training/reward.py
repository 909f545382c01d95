"""Train a pairwise (Bradley-Terry) reward model with TRL's RewardTrainer and measure it on held-out pairs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import RewardModelConfig
from rd_pipeline.training.common import (
    BaseModelRef,
    batch_metrics,
    check_records,
    choose_precision,
    common_trainer_args,
    load_model,
    load_tokenizer,
    loss_metrics,
    peft_lora_config,
    per_step_metrics,
    release_memory,
    save_trained,
    scratch_dir,
    step_values,
)
from rd_pipeline.training.scoring import RewardScorer

PAIR_FIELDS = {"prompt": ("system", "user"), "chosen": ("assistant",), "rejected": ("assistant",)}


def _margins(pairs: Sequence[dict], kind: str) -> list[float] | None:
    """The margins when every pair has one, None when none has; an error for a partial or bad column."""
    present = [("margin" in pair and pair["margin"] is not None) for pair in pairs]
    if not any(present):
        return None
    margins = []
    for index, pair in enumerate(pairs):
        value = pair.get("margin")
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(
                f"{kind} #{index}: field 'margin' must be a finite number if any pair has one, got {value!r}"
            )
        margins.append(float(value))
    return margins


def pairwise_accuracy(scorer: RewardScorer, pairs: Sequence[dict], batch_size: int = 16) -> dict[str, Any]:
    """Fraction of pairs with score(chosen) > score(rejected) (ties count as wrong), and the mean gap."""
    if not pairs:
        return {"accuracy": None, "mean_gap": None, "pairs": 0}
    chosen = scorer.score([p["prompt"] + p["chosen"] for p in pairs], batch_size)
    rejected = scorer.score([p["prompt"] + p["rejected"] for p in pairs], batch_size)
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "accuracy": sum(gap > 0 for gap in gaps) / len(gaps),
        "mean_gap": sum(gaps) / len(gaps),
        "pairs": len(pairs),
    }


def train_reward_model(
    base: str,
    train_pairs: Sequence[dict],
    heldout_pairs: Sequence[dict],
    cfg: RewardModelConfig,
    out_dir: Path,
    seed: int = 0,
    revision: str | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train a one-output sequence classifier initialised from ``base`` (at ``revision``) on preference pairs.

    Pairs are {"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message],
    "margin": float (optional)}; a margin enters the loss as -log sigmoid(r_chosen - r_rejected - margin).
    Pairs longer than ``cfg.max_length`` tokens are left out of training. The merged checkpoint goes to
    ``out_dir``; metrics include heldout_accuracy (None without held-out pairs, and in every process but the
    main one of an ``accelerate launch`` group, which alone scores the held-out pairs) and heldout_pairs.
    """
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    check_records(train_pairs, "reward training pair", PAIR_FIELDS)
    if heldout_pairs:
        check_records(heldout_pairs, "held-out reward pair", PAIR_FIELDS)
    margins = _margins(train_pairs, "reward training pair")
    started = time.perf_counter()
    precision = choose_precision(cfg.launch.mixed_precision)
    tokenizer = load_tokenizer(base, revision)
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in train_pairs]
    if margins is not None:
        rows = [{**row, "margin": margin} for row, margin in zip(rows, margins, strict=True)]
    set_seed(seed)  # the score head is initialised randomly
    model = load_model(base, AutoModelForSequenceClassification, precision, revision, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    base_ref = BaseModelRef(base, revision, AutoModelForSequenceClassification, {"num_labels": 1})
    with scratch_dir() as scratch:
        args = RewardConfig(
            **common_trainer_args(
                scratch, seed, precision, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing
            ),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            max_length=cfg.max_length,
        )
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_lora_config(cfg.lora, "SEQ_CLS"),
            callbacks=list(callbacks),
        )
        used = len(trainer.train_dataset)
        if used == 0:
            raise ValueError(
                f"all {len(rows)} reward training pairs are longer than reward_model.max_length="
                f"{cfg.max_length} tokens; raise max_length or shorten the responses"
            )
        trainer.train()
        history = list(trainer.state.log_history)
        batches = batch_metrics(trainer)
        steps = trainer.state.global_step
        save_trained(trainer, tokenizer, base_ref, out_dir, cfg.lora.enabled)
        main_process = trainer.accelerator.is_main_process
        del trainer, model
    release_memory()
    train_accuracy = step_values(history, "accuracy")
    heldout = {"accuracy": None, "mean_gap": None, "pairs": len(heldout_pairs)}
    if main_process:
        with RewardScorer(str(out_dir)) as scorer:
            heldout = pairwise_accuracy(scorer, heldout_pairs)
    return {
        **loss_metrics(history),
        **batches,
        "per_step": per_step_metrics(history, ("loss", "accuracy", "margin", "learning_rate", "grad_norm")),
        "steps": steps,
        "examples": len(train_pairs),
        "examples_used": used,
        "margin_used": margins is not None,
        "train_accuracy_last": train_accuracy[-1] if train_accuracy else None,
        "heldout_accuracy": heldout["accuracy"],
        "heldout_mean_gap": heldout["mean_gap"],
        "heldout_pairs": heldout["pairs"],
        "lora": cfg.lora.enabled,
        "mixed_precision": precision.mixed_precision,
        "runtime_s": round(time.perf_counter() - started, 2),
    }
