"""Local generation with vLLM on a GPU, with the same journal and sample planning as the transformers backend.

vLLM batches and schedules internally, so each pending request becomes one vLLM request asking for its
pending samples at once (``SamplingParams(n=...)``, seeded from the samples' journal keys). Requests are
submitted in chunks so that finished work reaches the journal while the rest runs. vLLM is imported only when
the model loads.
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Sequence
from typing import Any

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import (
    Completion,
    GenerationRequest,
    GenerationStats,
    Generator,
    ProgressCallback,
    local_model_identity,
)
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.sample_jobs import batch_seed, in_request_order, job_completions, plan_jobs
from rd_pipeline.generation.transformers_backend import chat_prompt_ids
from rd_pipeline.models import ResolvedModel

VLLM_MISSING = (
    "the vllm backend needs vLLM, which is not installed: pip install 'rd-pipeline[vllm]' (needs a GPU)"
)
_JOBS_PER_CHUNK = 256


def require_vllm() -> None:
    """Raise a clear error when vLLM is not importable."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(VLLM_MISSING)


def vllm_identity(resolved: ResolvedModel, model: ModelConfig) -> dict[str, str]:
    return local_model_identity("vllm", resolved, model)


class VllmGenerator(Generator):
    """A model served in this process by ``vllm.LLM``."""

    def __init__(self, resolved: ResolvedModel, model: ModelConfig, journal: Journal) -> None:
        self.resolved = resolved
        self.config = model
        self.journal = journal
        self._identity = vllm_identity(resolved, model)
        self._llm: Any = None

    @property
    def identity(self) -> dict[str, str]:
        return dict(self._identity)

    def _ensure_loaded(self) -> None:
        if self._llm is not None:
            return
        require_vllm()
        from vllm import LLM

        self._llm = LLM(
            model=self.resolved.location,
            revision=self.resolved.revision,
            dtype=self.config.dtype,
            max_num_seqs=max(self.config.batch_size, 1),
        )

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        requests = list(requests)
        done, pending = self.journal.split(self._identity, requests)
        total = len(done) + len(pending)
        stats = GenerationStats(samples_requested=total, samples_from_journal=len(done))
        results = dict(done)
        if pending:
            self._ensure_loaded()
            from vllm import SamplingParams

            tokenizer = self._llm.get_tokenizer()
            jobs = plan_jobs(requests, done, pending, max_sequences=max(len(pending), 1))
            for start in range(0, len(jobs), _JOBS_PER_CHUNK):
                chunk = jobs[start : start + _JOBS_PER_CHUNK]
                prompts = [{"prompt_token_ids": chat_prompt_ids(tokenizer, job.request)} for job in chunk]
                sampling = [
                    SamplingParams(
                        n=job.sequences,
                        temperature=job.request.params.temperature,
                        top_p=job.request.params.top_p,
                        max_tokens=job.request.params.max_new_tokens,
                        seed=batch_seed([job]),
                    )
                    for job in chunk
                ]
                outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
                entries = []
                for job, prompt, output in zip(chunk, prompts, outputs, strict=True):
                    decoded = [(o.text, len(o.token_ids)) for o in output.outputs]
                    input_tokens = len(prompt["prompt_token_ids"])
                    job_entries = job_completions(job, decoded, input_tokens)
                    entries += job_entries
                    for _, completion in job_entries:
                        results[(job.position, completion.sample_index)] = completion
                    stats.input_tokens += input_tokens
                    stats.output_tokens += sum(tokens for _, tokens in decoded)
                    stats.backend_requests += job.sequences
                self.journal.record(entries)
                stats.samples_generated += len(entries)
                if progress is not None:
                    progress(len(done) + stats.samples_generated, total, stats)
        elif progress is not None:
            progress(total, total, stats)
        return in_request_order(requests, results), stats

    def close(self) -> None:
        """Drop the engine and free GPU memory."""
        if self._llm is not None:
            self._llm = None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
