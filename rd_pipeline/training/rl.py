"""Reinforcement learning of the student against the trained reward model, with TRL's GRPO or RLOO trainer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import RlConfig
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

PROMPT_FIELDS = {"prompt": ("system", "user")}


def _trainer_classes(algorithm: str):
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    raise ValueError(f"rl.algorithm must be 'grpo' or 'rloo', got {algorithm!r}")


def train_rl(
    policy: str,
    reward_model: str,
    prompts: Sequence[dict],
    cfg: RlConfig,
    out_dir: Path,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``policy`` on ``prompts`` ({"prompt": [user message]}) with ``reward_model`` as the only reward.

    Each step samples ``cfg.num_generations`` completions per prompt; ``cfg.batch_size`` counts completions
    per step, so it must be a multiple of ``num_generations``. With ``cfg.beta`` > 0 the loss adds a KL
    penalty against the reference: ``policy`` itself as loaded (the SFT student), or the policy with its LoRA
    adapter disabled. The merged policy goes to ``out_dir``; metrics include reward_start and reward_end (mean
    reward of the first and last logged step), per-step rewards and KL (``rewards``, ``kls``, ``per_step``).
    """
    from transformers import AutoModelForCausalLM

    check_records(prompts, "RL prompt", PROMPT_FIELDS)
    if cfg.batch_size % cfg.num_generations != 0:
        raise ValueError(
            f"rl.batch_size ({cfg.batch_size}) must be a multiple of rl.num_generations "
            f"({cfg.num_generations}): each step scores whole groups of completions of the same prompt"
        )
    config_class, trainer_class = _trainer_classes(cfg.algorithm)
    from datasets import Dataset

    started = time.perf_counter()
    precision = choose_precision(cfg.launch.mixed_precision)
    tokenizer = load_tokenizer(policy)
    reward_tokenizer = load_tokenizer(reward_model)
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in prompts])
    with scratch_dir() as scratch:
        args = config_class(
            **common_trainer_args(
                scratch, seed, precision, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing
            ),
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            beta=cfg.beta,
            log_completions=False,
        )
        trainer = trainer_class(
            model=load_model(policy, AutoModelForCausalLM, precision),
            reward_funcs=reward_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_processing_classes=reward_tokenizer,
            peft_config=peft_lora_config(cfg.lora, "CAUSAL_LM"),
            callbacks=list(callbacks),
        )
        trainer.train()
        history = list(trainer.state.log_history)
        batches = batch_metrics(trainer)
        steps = trainer.state.global_step
        save_trained(
            trainer,
            tokenizer,
            BaseModelRef(policy, None, AutoModelForCausalLM, {}),
            out_dir,
            cfg.lora.enabled,
        )
        del trainer
    release_memory()
    rewards = step_values(history, "reward")
    kls = step_values(history, "kl")
    lengths = step_values(history, "completions/mean_length")
    return {
        **loss_metrics(history),
        **batches,
        "algorithm": cfg.algorithm,
        "steps": steps,
        "examples": len(prompts),
        "completions": steps * batches["global_batch_size"],
        "reward_start": rewards[0] if rewards else None,
        "reward_end": rewards[-1] if rewards else None,
        "rewards": rewards,
        "beta": cfg.beta,
        "kl_end": kls[-1] if kls else None,
        "kls": kls,
        "per_step": per_step_metrics(history, ("loss", "reward", "reward_std", "kl", "learning_rate")),
        "mean_completion_length": sum(lengths) / len(lengths) if lengths else None,
        "lora": cfg.lora.enabled,
        "mixed_precision": precision.mixed_precision,
        "runtime_s": round(time.perf_counter() - started, 2),
    }
