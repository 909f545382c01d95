"""Supervised fine-tuning of the student on prompt-completion conversations, with TRL's SFTTrainer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import SftConfig
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
)

SFT_FIELDS = {"prompt": ("system", "user", "assistant"), "completion": ("assistant",)}


def train_sft(
    base: str,
    examples: Sequence[dict],
    cfg: SftConfig,
    out_dir: Path,
    seed: int = 0,
    revision: str | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``base`` (at ``revision``) on ``examples`` ({"prompt": [messages], "completion": [message]}).

    The loss covers the completion tokens only. The merged checkpoint and tokenizer are written to
    ``out_dir``; returns train_loss (mean), first_loss, final_loss, per_step, steps, examples, epochs and
    runtime_s. Runs in one process or in every process of an ``accelerate launch`` group.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    check_records(examples, "SFT example", SFT_FIELDS)
    started = time.perf_counter()
    precision = choose_precision(cfg.launch.mixed_precision)
    tokenizer = load_tokenizer(base, revision)
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    base_ref = BaseModelRef(base, revision, AutoModelForCausalLM, {})
    with scratch_dir() as scratch:
        args = SFTConfig(
            **common_trainer_args(
                scratch, seed, precision, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing
            ),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            completion_only_loss=True,
            packing=False,
        )
        trainer = SFTTrainer(
            model=load_model(base, AutoModelForCausalLM, precision, revision),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_lora_config(cfg.lora, "CAUSAL_LM"),
            callbacks=list(callbacks),
        )
        trainer.train()
        history = list(trainer.state.log_history)
        batches = batch_metrics(trainer)
        steps = trainer.state.global_step
        epochs = trainer.state.epoch
        used = len(trainer.train_dataset)
        save_trained(trainer, tokenizer, base_ref, out_dir, cfg.lora.enabled)
        del trainer
    release_memory()
    return {
        **loss_metrics(history),
        **batches,
        "per_step": per_step_metrics(history, ("loss", "learning_rate", "grad_norm")),
        "steps": steps,
        "examples": len(examples),
        "examples_used": used,
        "epochs": epochs,
        "lora": cfg.lora.enabled,
        "mixed_precision": precision.mixed_precision,
        "runtime_s": round(time.perf_counter() - started, 2),
    }
