"""Planning shared by the local backends (transformers, vLLM): which sequences to decode, in which batches.

A *job* is one prompt and the pending samples it fills. Sampled jobs decode one sequence per pending sample
(and share the prompt's prefill); a greedy job (temperature 0) decodes one sequence and copies it to every
pending sample, since greedy samples are identical. Batches hold jobs with the same sampling settings, sorted
by prompt length so that left padding stays small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rd_pipeline.generation.base import Completion, GenerationRequest
from rd_pipeline.generation.journal import PendingSample
from rd_pipeline.generation.loop import FinishedBatch


@dataclass(frozen=True)
class SampleJob:
    """One prompt (request ``position``) and the pending samples one decode call fills."""

    position: int
    request: GenerationRequest
    samples: tuple[PendingSample, ...]

    @property
    def greedy(self) -> bool:
        return self.request.params.temperature == 0

    @property
    def sequences(self) -> int:
        """How many sequences the backend decodes for this job."""
        return 1 if self.greedy else len(self.samples)

    @property
    def settings(self) -> tuple[float, float, int, int]:
        """What must be equal across the jobs of one batch."""
        params = self.request.params
        return (params.temperature, params.top_p, params.max_new_tokens, self.sequences)


def plan_jobs(pending: Sequence[PendingSample], max_sequences: int) -> list[SampleJob]:
    """Group pending samples by request; split sampled groups into jobs of at most ``max_sequences``."""
    if max_sequences < 1:
        raise ValueError(f"max_sequences must be at least 1, got {max_sequences}")
    by_position: dict[int, list[PendingSample]] = {}
    for sample in pending:
        by_position.setdefault(sample.position, []).append(sample)
    jobs: list[SampleJob] = []
    for position, samples in by_position.items():
        request = samples[0].request
        step = len(samples) if request.params.temperature == 0 else max_sequences
        for start in range(0, len(samples), step):
            jobs.append(SampleJob(position, request, tuple(samples[start : start + step])))
    return jobs


def make_batches(
    jobs: Sequence[SampleJob], prompt_lengths: dict[int, int], batch_size: int
) -> list[list[SampleJob]]:
    """Batches of jobs with equal settings, at most ``batch_size`` sequences each, sorted by prompt length."""
    groups: dict[tuple[float, float, int, int], list[SampleJob]] = {}
    for job in jobs:
        groups.setdefault(job.settings, []).append(job)
    batches: list[list[SampleJob]] = []
    for settings in sorted(groups):
        ordered = sorted(groups[settings], key=lambda job: (prompt_lengths[job.position], job.position))
        current: list[SampleJob] = []
        for job in ordered:
            if current and (len(current) + 1) * job.sequences > batch_size:
                batches.append(current)
                current = []
            current.append(job)
        if current:
            batches.append(current)
    return batches


def batch_seed(batch: Sequence[SampleJob]) -> int:
    """A seed that depends only on the samples in the batch (their keys include the request seed)."""
    digest = hashlib.sha256()
    for job in batch:
        for sample in job.samples:
            digest.update(sample.key.encode())
    return int.from_bytes(digest.digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def job_completions(
    job: SampleJob, outputs: Sequence[tuple[str, int]], input_tokens: int
) -> list[tuple[str, Completion]]:
    """Journal entries for a job from its decoded ``(text, output_tokens)`` (greedy: one, reused)."""
    if len(outputs) != job.sequences:
        raise ValueError(
            f"job for request {job.request.request_id!r} expected {job.sequences} outputs, got {len(outputs)}"
        )
    entries = []
    for offset, sample in enumerate(job.samples):
        text, output_tokens = outputs[0 if job.greedy else offset]
        completion = Completion(
            job.request.request_id,
            sample.sample_index,
            job.request.params.temperature,
            text,
            input_tokens,
            output_tokens,
        )
        entries.append((sample.key, completion))
    return entries


def finished_jobs(
    jobs: Sequence[SampleJob], outputs: Sequence[Sequence[tuple[str, int]]], input_tokens: Sequence[int]
) -> FinishedBatch:
    """The journal entries and counts of decoded jobs: per job its ``(text, output_tokens)`` sequences and its
    prompt length."""
    batch = FinishedBatch([])
    for job, job_outputs, prompt_tokens in zip(jobs, outputs, input_tokens, strict=True):
        batch.entries += job_completions(job, job_outputs, prompt_tokens)
        batch.backend_requests += job.sequences
        batch.input_tokens += prompt_tokens
        batch.output_tokens += sum(tokens for _, tokens in job_outputs)
    return batch
