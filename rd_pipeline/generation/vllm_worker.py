"""The vLLM engine process: ``python -m rd_pipeline.generation.vllm_worker FD`` serves one ``vllm.LLM``.

The parent (``VllmGenerator``) talks to it over the socket ``FD`` with pickled messages:

- parent -> worker: an ``EngineSpec`` first, then lists of ``EngineJob``, then ``None`` to stop;
- worker -> parent: ``{"ready": {...}}`` once the engine is up, then per job list a list of ``EngineResult``;
  ``{"error": traceback}`` instead when something fails.

Running the engine in its own process means all its memory (weights, KV cache, compiled graphs, its own child
processes) is returned when the step's generator closes, and that vLLM's spawned helpers re-import only this
module, whose entry point is guarded. The worker also exits when the parent goes away (its socket closes).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from rd_pipeline.config import VllmConfig
from rd_pipeline.generation.base import GenerationRequest

CPU_KV_CACHE_GB = 1.0  # default KV cache per engine on a CPU, where vLLM would otherwise reserve host memory


@dataclass(frozen=True)
class EngineSpec:
    """What the worker needs to start its engine."""

    location: str
    revision: str | None
    dtype: str
    max_num_seqs: int
    settings: VllmConfig


@dataclass(frozen=True)
class EngineJob:
    """One prompt and how many sequences to sample for it; ``seed`` None uses the engine's generator."""

    request: GenerationRequest
    sequences: int
    seed: int | None
    logprobs: int | None = None  # top alternatives to return per generated token (first sequence only)


@dataclass(frozen=True)
class EngineResult:
    input_tokens: int
    outputs: list[tuple[str, int]]  # (text, generated tokens) per sequence
    # When the job asked for logprobs: per generated token of the first sequence, the token and its top
    # alternatives (token text -> logprob).
    top_logprobs: list[tuple[str, dict[str, float]]] | None = None


class EngineSettingsError(ValueError):
    """Engine settings that contradict each other."""


def engine_arguments(spec: EngineSpec, on_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from the model and its ``vllm`` settings.

    On a CPU: eager by default, the KV cache sized in bytes (``gpu_memory_utilization`` would reserve a share
    of host memory), and chunked prefill off when samples are seeded per request, because vLLM rewinds a
    seeded generator after a chunked prefill step and a CPU generator cannot be rewound.
    """
    settings = spec.settings
    arguments: dict[str, Any] = {
        "model": spec.location,
        "dtype": spec.dtype,
        "seed": settings.seed,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "max_num_seqs": spec.max_num_seqs,
        "enforce_eager": on_cpu if settings.enforce_eager is None else settings.enforce_eager,
    }
    if spec.revision:
        arguments["revision"] = spec.revision
    if settings.max_model_len is not None:
        arguments["max_model_len"] = settings.max_model_len
    kv_cache_gb = settings.kv_cache_memory_gb
    if on_cpu:
        kv_cache_gb = kv_cache_gb or CPU_KV_CACHE_GB
        if settings.tensor_parallel_size == 1:
            arguments["distributed_executor_backend"] = "uni"  # the model runs in this process: one start-up
        if settings.per_request_seed:
            arguments["enable_chunked_prefill"] = False
    elif settings.gpu_memory_utilization is not None:
        arguments["gpu_memory_utilization"] = settings.gpu_memory_utilization
    if kv_cache_gb is not None:
        arguments["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
    arguments.update(settings.engine_args)
    if on_cpu and settings.per_request_seed and arguments.get("enable_chunked_prefill") is not False:
        raise EngineSettingsError(
            "vllm.per_request_seed needs chunked prefill off on a CPU, but vllm.engine_args sets "
            "enable_chunked_prefill; set vllm.per_request_seed: false to use one engine-wide seed instead"
        )
    return arguments


def _stop_token_ids(tokenizer: Any, location: str, revision: str | None) -> list[int]:
    """The same stop tokens as the transformers backend: eos ids plus the chat end markers the vocabulary has."""
    from transformers import GenerationConfig

    from rd_pipeline.generation.transformers_backend import stop_token_ids

    try:
        generation_config = GenerationConfig.from_pretrained(location, revision=revision)
    except OSError:
        generation_config = None
    return stop_token_ids(tokenizer, generation_config)


def _start_engine(spec: EngineSpec) -> tuple[Any, dict[str, Any]]:
    from vllm import LLM
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    if on_cpu:
        # The engine core runs in this process too; on a GPU its own process overlaps scheduling with the model.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    arguments = engine_arguments(spec, on_cpu)
    return LLM(**arguments), {"platform": str(current_platform.device_type), "engine_args": arguments}


def _generate(llm: Any, tokenizer: Any, stop_ids: list[int], jobs: list[EngineJob]) -> list[EngineResult]:
    from vllm import SamplingParams

    from rd_pipeline.generation.transformers_backend import chat_prompt_ids

    prompts = [{"prompt_token_ids": chat_prompt_ids(tokenizer, job.request)} for job in jobs]
    sampling = []
    for job in jobs:
        params = job.request.params
        sampling.append(
            SamplingParams(
                n=job.sequences,
                temperature=params.temperature,
                top_p=params.top_p if params.temperature > 0 else 1.0,
                max_tokens=params.max_new_tokens,
                seed=job.seed,
                stop_token_ids=stop_ids,
                logprobs=job.logprobs,
            )
        )
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    return [
        EngineResult(
            len(prompt["prompt_token_ids"]),
            [(sequence.text, len(sequence.token_ids)) for sequence in output.outputs],
            _top_logprobs(tokenizer, output.outputs[0]) if job.logprobs else None,
        )
        for job, prompt, output in zip(jobs, prompts, outputs, strict=True)
    ]


def _top_logprobs(tokenizer: Any, sequence: Any) -> list[tuple[str, dict[str, float]]]:
    """A sequence's generated tokens as text, each with its top alternatives (token text -> logprob); token ids
    that decode to the same text share one entry, their probabilities summed."""
    positions = []
    for token_id, alternatives in zip(sequence.token_ids, sequence.logprobs or [], strict=False):
        top: dict[str, float] = {}
        for alternative_id, logprob in alternatives.items():
            text = logprob.decoded_token
            if text is None:
                text = tokenizer.decode([alternative_id])
            if text in top:
                high, low = max(top[text], logprob.logprob), min(top[text], logprob.logprob)
                top[text] = high + math.log1p(math.exp(low - high))
            else:
                top[text] = float(logprob.logprob)
        positions.append((tokenizer.decode([token_id]), top))
    return positions


def serve(connection: Connection) -> int:
    """Start the engine the first message asks for, then answer job lists until told to stop."""
    try:
        spec: EngineSpec = connection.recv()
        llm, info = _start_engine(spec)
        tokenizer = llm.get_tokenizer()
        stop_ids = _stop_token_ids(tokenizer, spec.location, spec.revision)
    except BaseException:
        connection.send({"error": traceback.format_exc()})
        return 1
    connection.send({"ready": info | {"pid": os.getpid()}})
    while True:
        try:
            jobs = connection.recv()
        except EOFError:  # the parent went away
            return 0
        if jobs is None:
            return 0
        try:
            connection.send(_generate(llm, tokenizer, stop_ids, jobs))
        except Exception:
            connection.send({"error": traceback.format_exc()})


def main(argv: list[str]) -> int:
    connection = Connection(int(argv[1]))
    try:
        return serve(connection)
    finally:
        connection.close()


if __name__ == "__main__":
    # Run the imported module, not __main__, so that the messages' classes pickle under their module's name.
    from rd_pipeline.generation import vllm_worker

    sys.exit(vllm_worker.main(sys.argv))
