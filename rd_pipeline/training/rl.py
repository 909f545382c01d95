"""Reinforcement learning of the student against the trained reward model, with TRL's GRPO or RLOO trainer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rd_pipeline.config import RlConfig
from rd_pipeline.training.metrics import step_values
from rd_pipeline.training.records import check_records
from rd_pipeline.training.rl_rewards import RewardModelReward, reward_functions
from rd_pipeline.training.rl_rollouts import ROLLOUTS_FILE, rollout_recorder
from rd_pipeline.training.selection import BestWeights, selection_callback
from rd_pipeline.training.stage import Stage, TrainedRun
from rd_pipeline.training.validation import PolicyValidator, ValidationPrompt

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


def advantage_scaling(cfg: RlConfig) -> dict[str, Any]:
    """TRL's setting for ``cfg.scale_rewards``: GRPO's scale_rewards, RLOO's normalize_advantages (batch-wide
    only, so 'group' is refused for RLOO)."""
    if cfg.algorithm == "grpo":
        return {"scale_rewards": cfg.scale_rewards}
    if cfg.scale_rewards == "group":
        raise ValueError(
            "rl.scale_rewards 'group' is GRPO's; RLOO normalizes advantages over the batch or not at all"
        )
    return {"normalize_advantages": cfg.scale_rewards == "batch"}


def _trainer_builder(stage: Stage, rewards: RlRewards, prompts: Sequence[dict], cfg: RlConfig, receivers):
    """A function of the trainer's output_dir that builds the GRPO or RLOO trainer on the configured reward
    sources; each of ``receivers`` gets the trainer as its ``trainer`` attribute."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    config_class, trainer_class = _trainer_classes(cfg.algorithm)
    dataset = Dataset.from_list(
        [{"prompt": p["prompt"], "vote_answer": p.get("vote_answer"), "item": p.get("item")} for p in prompts]
    )

    def build(output_dir: str):
        args = config_class(
            **stage.trainer_args(output_dir),
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            beta=cfg.beta,
            reward_weights=rewards.weights,
            log_completions=False,
            **advantage_scaling(cfg),
            **vllm_generation_args(cfg),
        )
        trainer = trainer_class(
            model=stage.load_model(AutoModelForCausalLM),
            reward_funcs=rewards.functions,
            args=args,
            train_dataset=dataset,
            **stage.trainer_kwargs("CAUSAL_LM"),
        )
        for receiver in receivers:
            receiver.trainer = trainer
        return trainer

    return build


def _reward_metrics(run: TrainedRun, cfg: RlConfig, sources: RlRewards) -> dict[str, Any]:
    """Rewards and KL per step (first and last too), completions sampled and their mean length, the reward
    sources and how the reward model's scores were standardised."""
    rewards = step_values(run.history, "reward")
    kls = step_values(run.history, "kl")
    lengths = step_values(run.history, "completions/mean_length")
    standard = sources.reward_model.standardisation
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
        "rewards_config": [source.model_dump(mode="json") for source in cfg.rewards],
        "reward_standardisation": {
            "mean": standard.mean,
            "std": standard.std,
            "responses": standard.responses,
        },
    }


@dataclass(frozen=True)
class RlRewards:
    """The reward functions TRL sums with their weights, and the reward model's scorer for validation."""

    functions: list[Any]
    weights: list[float]
    reward_model: RewardModelReward

    @property
    def by_name(self) -> dict[str, float]:
        return {
            function.__name__: weight for function, weight in zip(self.functions, self.weights, strict=True)
        }


def _rewards(cfg: RlConfig, reward_model: str, reference: Sequence[list[dict]], eos_token_id) -> RlRewards:
    functions, weights = reward_functions(cfg.rewards, reward_model, reference, eos_token_id)
    scorer = next((f for f in functions if isinstance(f, RewardModelReward)), None)
    return RlRewards(functions, weights, scorer or RewardModelReward(reward_model, reference))


def _kl_since(trainer_ref: list[Any]) -> Callable[[int], float | None]:
    """The mean KL to the reference the trainer measured in the steps after a given step, up to the current
    one (logged steps, and the current step's values, which the trainer logs after the callbacks ran)."""

    def kl_since(step: int) -> float | None:
        if not trainer_ref:
            return None
        trainer = trainer_ref[0]
        values = [
            entry["kl"]
            for entry in trainer.state.log_history
            if entry.get("step", 0) > step and "kl" in entry
        ]
        values += list(getattr(trainer, "_metrics", {}).get("train", {}).get("kl", []))
        return sum(values) / len(values) if values else None

    return kl_since


def _kl_budget(max_kl: float | None) -> Callable[[dict[str, Any]], str | None]:
    def over_budget(point: dict[str, Any]) -> str | None:
        kl = point.get("kl")
        if max_kl is not None and kl is not None and kl > max_kl:
            return f"KL to the SFT student {kl:.4g} over rl.max_kl {max_kl:g}"
        return None

    return over_budget


class _TrainerSlot:
    """Receives the trainer once it is built (see ``_trainer_builder``), for functions that read its state."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    @property
    def trainer(self) -> Any:
        return self.items[0] if self.items else None

    @trainer.setter
    def trainer(self, value: Any) -> None:
        self.items[:] = [value]


def train_rl(
    policy: str,
    reward_model: str,
    prompts: Sequence[dict],
    cfg: RlConfig,
    out_dir: Path,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
    validation: Sequence[dict] = (),
    reference: Sequence[list[dict]] = (),
    report_to: Sequence[str] = (),
) -> dict[str, Any]:
    """Train ``policy`` on ``prompts`` against the configured reward sources (``cfg.rewards``).

    Prompt records are {"prompt": [user message], "benchmark", "prompt_id", "vote_answer" (None: no majority
    answer), "item" (``item_to_json``)}. Each step samples ``cfg.num_generations`` completions per prompt;
    ``cfg.batch_size`` counts completions per step. The reward model's scores are standardised with its scores on
    ``reference`` (the SFT student's own responses, as conversations). With ``cfg.beta`` > 0 the loss adds a KL
    penalty against the policy as loaded (the SFT student). Every ``cfg.eval_every_steps`` steps the policy
    decodes the ``validation`` prompts (records like ``prompts``) greedily; the best checkpoint by agreement
    with their vote labels is kept, the starting policy counting as step 0, and training stops after
    ``cfg.patience`` validations without improvement or past ``cfg.max_kl``. The selected weights go to
    ``out_dir`` with ``rollouts.jsonl`` (see ``rl_rollouts``); metrics include the validation curve and the
    selected step (``validation``), per-step rewards and KL.
    """
    from transformers import AutoModelForCausalLM

    check_records(prompts, "RL prompt", PROMPT_FIELDS)
    inputs = {"reward_model": reward_model, "prompts": list(prompts), "validation": list(validation)}
    stage = Stage.start(cfg, policy, seed, inputs=inputs, report_to=report_to)
    rewards = _rewards(cfg, reward_model, reference, stage.tokenizer.eos_token_id)
    slot = _TrainerSlot()
    limit = None if cfg.log_rollouts == "all" else int(cfg.log_rollouts)
    recorder = rollout_recorder(rewards.by_name, prompts, limit)
    best = BestWeights(patience=cfg.patience)
    validator = _validator(validation, stage, cfg, rewards, _kl_since(slot.items), best)
    own: list[Any] = [recorder]
    if validator is not None:
        own.append(selection_callback(best, cfg.eval_every_steps, validator, True, _kl_budget(cfg.max_kl)))
    stage = replace(stage, callbacks=(*callbacks, *own))
    run = stage.train(
        _trainer_builder(stage, rewards, prompts, cfg, [recorder, slot]),
        AutoModelForCausalLM,
        out_dir,
        carried_files=(ROLLOUTS_FILE,),
    )
    best.recover(run.saved_selection)
    rewards.reward_model.scorer.close()
    return {
        **stage.metrics(run, len(prompts), RL_STEP_KEYS),
        **_reward_metrics(run, cfg, rewards),
        "validation": {
            **best.summary(),
            "prompts": len(validation),
            "selection_metric": validator.selection_metric if validator else None,
        },
    }


def _validator(
    validation: Sequence[dict],
    stage: Stage,
    cfg: RlConfig,
    rewards: RlRewards,
    kl_since: Callable[[int], float | None],
    best: BestWeights,
) -> PolicyValidator | None:
    """What decodes the ``validation`` prompts greedily and scores the policy on them, with the reward model's
    raw score and the KL since the best step so far; None without validation prompts."""
    if not validation:
        return None
    return PolicyValidator(
        [ValidationPrompt.from_record(record) for record in validation],
        stage.tokenizer,
        cfg.max_completion_length,
        rewards.reward_model.raw,
        lambda: kl_since(best.curve[-1]["step"] if best.curve else 0),
    )
