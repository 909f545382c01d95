"""Trainer arguments every TRL config shares, activation checkpointing and the LoRA (peft) settings."""

from __future__ import annotations

from typing import Any

from rd_pipeline.config import LoraConfig
from rd_pipeline.training.precision import Precision


def peft_lora_config(cfg: LoraConfig, task_type: str):
    """A peft ``LoraConfig`` for ``task_type`` ("CAUSAL_LM" or "SEQ_CLS"), or None when LoRA is disabled."""
    if not cfg.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type=task_type
    )


def common_trainer_args(
    output_dir: str,
    seed: int,
    precision: Precision,
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    save_every_steps: int = 0,
) -> dict[str, Any]:
    """Arguments every TRL config shares: seeded, logged each step, no external reporting, and the trainer's
    state saved every ``save_every_steps`` optimizer steps in ``output_dir`` (the latest only; 0: never)."""
    saving: dict[str, Any] = (
        {"save_strategy": "steps", "save_steps": save_every_steps, "save_total_limit": 1}
        if save_every_steps > 0
        else {"save_strategy": "no"}
    )
    return {
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "logging_steps": 1,
        **saving,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        **checkpointing_args(gradient_checkpointing),
        "ddp_find_unused_parameters": False,
        **precision.trainer_kwargs(),
    }


def checkpointing_args(enabled: bool, known_fields: set[str] | None = None) -> dict[str, Any]:
    """Activation (gradient) checkpointing under the name the installed transformers uses.

    Newer releases call it ``activation_checkpointing`` and keep ``gradient_checkpointing`` as a deprecated alias;
    older ones know only ``gradient_checkpointing``. ``known_fields`` defaults to ``TrainingArguments``' fields.
    """
    if known_fields is None:
        from transformers import TrainingArguments

        known_fields = set(TrainingArguments.__dataclass_fields__)
    name = (
        "activation_checkpointing" if "activation_checkpointing" in known_fields else "gradient_checkpointing"
    )
    if not enabled:
        return {name: False}
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}
