"""Reinforcement learning of the student against the trained reward model, with TRL's GRPO or RLOO trainer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import RlConfig
from rd_pipeline.training.common import Stage, TrainedRun, check_records, load_tokenizer, step_values

PROMPT_FIELDS = {"prompt": ("system", "user")}
RL_STEP_KEYS = ("loss", "reward", "reward_std", "kl", "learning_rate")


def _trainer_classes(algorithm: str):
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    raise ValueError(f"rl.algorithm must be 'grpo' or 'rloo', got {algorithm!r}")


def vllm_generation_args(cfg: RlConfig) -> dict[str, Any]:
    """TRL's settings for sampling the RL completions with vLLM (colocated with training, or a `trl vllm-serve`
    server); plain ``generate`` when ``cfg.use_vllm`` is off."""
    if not cfg.use_vllm:
        return {"use_vllm": False}
    args: dict[str, Any] = {"use_vllm": True, "vllm_mode": cfg.vllm_mode}
    if cfg.vllm_mode == "server":
        args["vllm_server_base_url"] = cfg.vllm_server_base_url
    else:
        args["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        args["vllm_tensor_parallel_size"] = cfg.vllm_tensor_parallel_size
    return args


def _trainer_builder(stage: Stage, reward_model: str, prompts: Sequence[dict], cfg: RlConfig):
    """A function of the trainer's output_dir that builds the GRPO or RLOO trainer with the reward model as
    its only reward function."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    config_class, trainer_class = _trainer_classes(cfg.algorithm)
    reward_tokenizer = load_tokenizer(reward_model)
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in prompts])

    def build(output_dir: str):
        args = config_class(
            **stage.trainer_args(output_dir),
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            beta=cfg.beta,
            log_completions=False,
            **vllm_generation_args(cfg),
        )
        return trainer_class(
            model=stage.load_model(AutoModelForCausalLM),
            reward_funcs=reward_model,
            args=args,
            train_dataset=dataset,
            reward_processing_classes=reward_tokenizer,
            **stage.trainer_kwargs("CAUSAL_LM"),
        )

    return build


def _reward_metrics(run: TrainedRun, cfg: RlConfig) -> dict[str, Any]:
    """Rewards and KL per step (first and last too), completions sampled and their mean length."""
    rewards = step_values(run.history, "reward")
    kls = step_values(run.history, "kl")
    lengths = step_values(run.history, "completions/mean_length")
    return {
        "algorithm": cfg.algorithm,
        "completions": run.steps * run.batches["global_batch_size"],
        "reward_start": rewards[0] if rewards else None,
        "reward_end": rewards[-1] if rewards else None,
        "rewards": rewards,
        "beta": cfg.beta,
        "kl_end": kls[-1] if kls else None,
        "kls": kls,
        "mean_completion_length": sum(lengths) / len(lengths) if lengths else None,
    }


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
    per step (a multiple of ``num_generations``, which RlConfig checks). With ``cfg.beta`` > 0 the loss adds a
    KL penalty against the reference: ``policy`` itself as loaded (the SFT student), or the policy with its
    LoRA adapter disabled. The merged policy goes to ``out_dir``; metrics include reward_start and reward_end
    (mean reward of the first and last logged step), per-step rewards and KL (``rewards``, ``kls``,
    ``per_step``).
    """
    from transformers import AutoModelForCausalLM

    check_records(prompts, "RL prompt", PROMPT_FIELDS)
    inputs = {"reward_model": reward_model, "prompts": list(prompts)}
    stage = Stage.start(cfg, policy, seed, callbacks=callbacks, inputs=inputs)
    run = stage.train(_trainer_builder(stage, reward_model, prompts, cfg), AutoModelForCausalLM, out_dir)
    return {**stage.metrics(run, len(prompts), RL_STEP_KEYS), **_reward_metrics(run, cfg)}
