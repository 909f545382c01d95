"""The three training stages (SFT, reward model, RL), what they share, and the process group they run in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rd_pipeline.config.section import Section
from rd_pipeline.config.versioning import UNVERSIONED


class LoraConfig(Section):
    """LoRA adapters (peft) trained instead of all weights; they are merged into the saved checkpoint."""

    enabled: bool = Field(default=False, description="train LoRA adapters; false: full fine-tuning")
    r: int = Field(default=16, ge=1, description="rank of the adapter matrices")
    alpha: int = Field(default=32, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="dropout on the adapter inputs (SFT, RL; the reward trainer turns all dropout off)",
    )
    target_modules: list[str] | str = Field(
        default="all-linear", description="module names that get adapters, or 'all-linear'"
    )


TRAINING_STRATEGIES = ("ddp", "fsdp2", "zero2", "zero3")


class LaunchConfig(Section):
    """How a training step runs: its own process group under ``accelerate launch``."""

    num_processes: int = Field(
        default=1, ge=1, description="processes in total over all machines, one per GPU (on a CPU: gloo)"
    )
    num_machines: int = Field(default=1, ge=1, description="machines the processes are spread over")
    machine_rank: int = Field(default=0, ge=0, description="this machine's rank when num_machines > 1")
    main_process_ip: str | None = Field(
        default=None, description="address of machine rank 0; needed when num_machines > 1"
    )
    main_process_port: int | None = Field(
        default=None, ge=1, le=65535, description="rendezvous port; default: a free port on one machine"
    )
    strategy: Literal["ddp", "fsdp2", "zero2", "zero3"] = Field(
        default="ddp",
        description="data parallel (ddp), fully sharded (fsdp2) or DeepSpeed ZeRO stage 2/3 (zero2, zero3); "
        "fsdp2 needs GPUs (accelerate sets up FSDP only there; on a CPU training stops before step 1); "
        "zero* need deepspeed installed and also run over gloo on a CPU",
    )
    accelerate_config_file: str | None = Field(
        default=None,
        description="an accelerate config YAML to use as is (see `rd accelerate-config`); replaces strategy",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        default="auto",
        description="autocast over fp32 weights: auto = bf16 on a GPU that has it, else fp16 on a GPU, "
        "none on a CPU. Trainable weights always stay fp32",
    )

    @model_validator(mode="after")
    def _machines_fit(self) -> LaunchConfig:
        if self.num_processes % self.num_machines != 0:
            raise ValueError(
                f"num_processes ({self.num_processes}) must be a multiple of num_machines ({self.num_machines})"
            )
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank ({self.machine_rank}) must be below num_machines")
        if self.num_machines > 1 and (self.main_process_ip is None or self.main_process_port is None):
            raise ValueError("num_machines > 1 needs main_process_ip and main_process_port")
        return self


class TrainerConfig(Section):
    """What every training stage sets: optimizer, batch, length of training, LoRA and the process group.

    Each field maps onto the TRL ``TrainingArguments`` field of the same meaning (``batch_size`` is
    ``per_device_train_batch_size``, ``gradient_checkpointing`` is ``activation_checkpointing``).
    """

    learning_rate: float = Field(
        default=2e-5, gt=0, description="peak learning rate of the AdamW optimizer (then linear decay to 0)"
    )
    batch_size: int = Field(default=4, ge=1, description="examples per process per micro-step")
    max_steps: int = Field(default=-1, description="stop after this many optimizer steps; -1: run epochs")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="micro-steps per optimizer step")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations to save memory")
    lora: LoraConfig = Field(default=LoraConfig(), description="LoRA adapters instead of full fine-tuning")
    launch: LaunchConfig = Field(default=LaunchConfig(), description="the process group training runs in")
    save_every_steps: int = Field(
        default=200,
        ge=0,
        description="save the trainer's state (weights, optimizer, scheduler, RNG, data position) every this "
        "many optimizer steps, keeping the latest only, so a re-run after a crash resumes from it; 0 = never. "
        "Not part of the data version",
        json_schema_extra=UNVERSIONED,
    )


class EpochTrainerConfig(TrainerConfig):
    """A stage that passes over a fixed data set: epochs, and a length limit on each example."""

    epochs: float = Field(
        default=1.0, gt=0, description="passes over the training data (a fraction is allowed); max_steps wins"
    )
    max_length: int = Field(
        default=512, ge=16, description="longest tokenized example; longer ones are truncated or left out"
    )


class SftConfig(EpochTrainerConfig):
    """Supervised fine-tuning (TRL SFTTrainer) on the teacher's well-labelled responses, validated on held-out
    training prompts with the best checkpoint kept (the base student is step 0)."""

    max_length: int = Field(
        default=512, ge=16, description="longest tokenized prompt + completion; the rest is truncated"
    )
    validation_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of training prompts held out of SFT as validation prompts (by a stable hash of the "
        "prompt id: the share right after RL's, so SFT's checkpoint selection never looks at RL's validation "
        "prompts); their teacher responses are not SFT examples, and neither are those of RL's validation "
        "prompts. 0 = no validation, the last step ships",
    )
    max_validation_prompts: int = Field(
        default=256,
        ge=1,
        description="at most this many validation prompts (a stable subset); bounds the judge's work too: two "
        "verdicts (both orders) per open-ended validation prompt and validation",
    )
    validation_max_new_tokens: int = Field(
        default=256, ge=1, description="longest greedy answer to a validation prompt, in tokens"
    )
    eval_every_steps: int = Field(
        default=20,
        ge=1,
        description="decode the validation prompts greedily every this many optimizer steps and at the last "
        "step; the checkpoint with the best validation score ships: agreement with the vote labels on verifiable "
        "prompts, the judge's preference over the base student's answer on open-ended ones (both kinds: the mean "
        "of per-prompt scores)",
    )
    patience: int = Field(
        default=3,
        ge=0,
        description="stop after this many validations without a better validation score; 0 = never",
    )


class RewardModelConfig(EpochTrainerConfig):
    """Pairwise (Bradley-Terry) reward model (TRL RewardTrainer) initialised from the SFT student."""

    learning_rate: float = Field(
        default=1e-5, gt=0, description="peak learning rate of the AdamW optimizer (then linear decay to 0)"
    )
    batch_size: int = Field(default=4, ge=1, description="pairs per process per micro-step")
    max_length: int = Field(
        default=512, ge=16, description="longest tokenized prompt + response; longer pairs are left out"
    )
    eval_every_steps: int = Field(
        default=10,
        ge=1,
        description="score the held-out pairs every this many optimizer steps and at the last step; the "
        "checkpoint with the best held-out pairwise accuracy is the one saved (without held-out pairs: the last)",
    )
    patience: int = Field(
        default=5,
        ge=0,
        description="stop after this many held-out evaluations without a better accuracy; 0 = never stop early",
    )


class RewardSourceConfig(Section):
    """One source of the RL reward and its weight in the sum."""

    source: Literal["reward_model", "vote_agreement"] = Field(
        description="reward_model: the trained reward model's score, standardised with the mean and standard "
        "deviation of its scores on the SFT student's own responses (the paper's reward). vote_agreement: 1 when "
        "the completion's extracted answer equals the prompt's majority-vote answer, else 0; verifiable "
        "benchmarks only, and prompts without a majority answer get no value from it (the other sources decide)"
    )
    weight: float = Field(default=1.0, gt=0, description="weight of this source in the weighted sum")


def _combined_rewards() -> list[RewardSourceConfig]:
    return [RewardSourceConfig(source="reward_model"), RewardSourceConfig(source="vote_agreement")]


class RlConfig(TrainerConfig):
    """GRPO or RLOO (TRL) on the SFT student against the reward model, with a KL penalty to the SFT student,
    validated on held-out training prompts with the best checkpoint kept (the SFT student is step 0)."""

    algorithm: Literal["grpo", "rloo"] = Field(default="grpo", description="TRL's GRPOTrainer or RLOOTrainer")
    max_steps: int = Field(default=20, ge=1, description="optimizer steps to run")
    learning_rate: float = Field(
        default=1e-6, gt=0, description="peak learning rate of the AdamW optimizer (then linear decay to 0)"
    )
    batch_size: int = Field(
        default=4,
        ge=1,
        description="completions (prompts x num_generations) per process per micro-step; a multiple of "
        "num_generations",
    )
    num_generations: int = Field(default=4, ge=2, description="completions sampled per prompt (one group)")
    max_completion_length: int = Field(default=128, ge=1, description="longest sampled completion, in tokens")
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature of the completions")
    beta: float = Field(
        default=0.05, ge=0, description="KL coefficient against the reference (the SFT student); 0 = no KL"
    )
    use_vllm: bool = Field(
        default=False,
        description="sample the RL completions with vLLM (TRL's use_vllm; needs vLLM on a GPU) instead of "
        "transformers' generate",
    )
    vllm_mode: Literal["colocate", "server"] = Field(
        default="colocate",
        description="colocate: a vLLM engine inside each training process; server: a `trl vllm-serve` server "
        "at vllm_server_base_url, weights synced to it each step",
    )
    vllm_server_base_url: str | None = Field(
        default=None,
        description="address of the `trl vllm-serve` server (vllm_mode server), e.g. http://host:8000",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.3, gt=0, le=1, description="share of each GPU's memory the colocated engine may take"
    )
    vllm_tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs one colocated engine spans (tensor parallelism)"
    )
    rewards: list[RewardSourceConfig] = Field(
        default_factory=_combined_rewards,
        min_length=1,
        description="the reward: a weighted sum of sources. Default: the reward model plus agreement with the "
        "majority vote (see docs/configuration.md, 'Rewards for RL'); the paper's setting is "
        "`[{source: reward_model}]`",
    )
    reward_reference_responses: int = Field(
        default=256,
        ge=2,
        description="SFT student responses (a stable sample of its responses to training prompts) the reward "
        "model scores before RL to standardise its reward; more give a steadier mean and standard deviation and "
        "a longer start",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="batch",
        description="how advantages are scaled (TRL's scale_rewards; GRPO): group = by each prompt's reward "
        "standard deviation (any reward difference inside a group becomes a full-size advantage), batch = by "
        "the batch's, none = not at all. RLOO: batch normalizes its advantages, none does not, group is refused",
    )
    validation_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of training prompts held out of RL as validation prompts (by a stable hash of the "
        "prompt id); SFT neither trains on them nor selects its checkpoint on them, so RL is compared with the "
        "SFT student on prompts neither stage learnt or picked on. 0 = no validation, the last step ships",
    )
    max_validation_prompts: int = Field(
        default=256, ge=1, description="at most this many validation prompts (a stable subset)"
    )
    eval_every_steps: int = Field(
        default=5, ge=1, description="decode the validation prompts greedily every this many optimizer steps"
    )
    patience: int = Field(
        default=3,
        ge=0,
        description="stop after this many validations without a better validation agreement; 0 = never",
    )
    max_kl: float | None = Field(
        default=None,
        gt=0,
        description="stop when the mean KL to the SFT student since the last validation exceeds this "
        "(needs beta > 0, which makes the trainers measure it); none = no KL budget",
    )
    log_rollouts: int | Literal["all"] = Field(
        default=64,
        description="completions per step written to the rl_rollouts table (the first ones of each step), or "
        "'all'",
        json_schema_extra=UNVERSIONED,
    )

    @model_validator(mode="after")
    def _rewards_named_once(self) -> RlConfig:
        names = [reward.source for reward in self.rewards]
        if len(names) != len(set(names)):
            raise ValueError(f"rewards: each source may appear once, got {names}")
        if isinstance(self.log_rollouts, int) and self.log_rollouts < 0:
            raise ValueError(f"log_rollouts must be 'all' or a count of at least 0, got {self.log_rollouts}")
        return self

    @model_validator(mode="after")
    def _vllm_server_needs_address(self) -> RlConfig:
        if self.use_vllm and self.vllm_mode == "server" and not self.vllm_server_base_url:
            raise ValueError(
                "use_vllm with vllm_mode 'server' needs vllm_server_base_url (the trl vllm-serve address)"
            )
        return self

    @model_validator(mode="after")
    def _whole_groups_per_batch(self) -> RlConfig:
        if self.batch_size % self.num_generations != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                f"({self.num_generations}): each step scores whole groups of completions of the same prompt"
            )
        return self
