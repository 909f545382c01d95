"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ``transformers serve``).

Requests run concurrently (bounded by ``max_concurrency``, paced by the RPM/TPM limits) and every sample is
written to the journal as soon as its response arrives, so a killed run resumes with only the samples it
lacked. Each request asks for all of a prompt's pending samples at once (``n`` plus a seed); when the server
returns fewer choices, the rest are asked one by one, each with its own seed derived from the base seed and
the sample index.

Budget: before each request, the money spent so far by this generator, plus a worst-case estimate of the
requests in flight and of this one, is compared with ``max_budget_usd``. When it would be exceeded, nothing
more is sent, the requests in flight finish, and ``generate()`` returns only the completed samples with
``stats.budget_exhausted`` set: callers must handle partial results in that case.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rd_pipeline.config import ApiConfig, ModelConfig
from rd_pipeline.generation.api_client import (
    ApiError,
    ChatClient,
    ChatResult,
    RequestAbandoned,
    fetch_model_entry,
    model_fingerprint,
)
from rd_pipeline.generation.base import (
    CandidateProbabilities,
    Completion,
    GenerationRequest,
    GenerationStats,
    Generator,
    ProgressCallback,
    ScoringRequest,
)
from rd_pipeline.generation.journal import Journal, PendingSample, identity_version, sample_key
from rd_pipeline.generation.rate_limit import RateLimiter

log = logging.getLogger(__name__)

__all__ = ["ApiError", "OpenAIGenerator", "derived_seed", "estimate_input_tokens"]


def derived_seed(base_seed: int, sample_index: int) -> int:
    """The seed of a sample asked for on its own: a hash of the base seed and the sample index (31 bits)."""
    digest = hashlib.sha256(f"{base_seed}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def estimate_input_tokens(request: GenerationRequest) -> int:
    """A deliberately high estimate of a request's prompt tokens (UTF-8 bytes / 3 plus overhead)."""
    return sum(len(m.get("content", "").encode()) // 3 + 8 for m in request.messages) + 8


@dataclass
class _Unit:
    """One HTTP request to make: some sample indices of one request, with the seed and n to send."""

    position: int
    request: GenerationRequest
    indices: list[int]
    seed: int


class OpenAIGenerator(Generator):
    """Generates through an OpenAI-compatible endpoint, journaled under ``journal_dir``.

    ``backoff_base_s`` is the first retry delay (doubled per attempt, jittered); ``progress_interval_s``
    throttles progress callbacks. The money limit applies to everything this instance sends over its lifetime.
    """

    def __init__(
        self,
        model: ModelConfig,
        journal_dir: Path,
        *,
        backoff_base_s: float = 0.5,
        progress_interval_s: float = 0.5,
    ) -> None:
        if model.api is None:
            raise ValueError(f"model {model.ref!r}: the openai backend needs an 'api' section")
        self.api: ApiConfig = model.api
        self.model_name = model.api.model or model.ref
        self.journal_dir = Path(journal_dir)
        self.backoff_base_s = backoff_base_s
        self.progress_interval_s = progress_interval_s
        self.spent_usd = 0.0
        self._identity: dict[str, str] | None = None
        self._journal: Journal | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIGenerator(base_url={self.api.base_url!r}, model={self.model_name!r})"

    @property
    def identity(self) -> dict[str, str]:
        if self._identity is None:
            identity = {
                "backend": "openai",
                "base_url": self.api.base_url.rstrip("/"),
                "model": self.model_name,
            }
            entry = fetch_model_entry(self.api, self.model_name)
            if entry is None:
                log.info(
                    "endpoint %s does not list model %r; identity holds no model fingerprint",
                    self.api.base_url,
                    self.model_name,
                )
            else:
                if entry.get("owned_by") is not None:
                    identity["owned_by"] = str(entry["owned_by"])
                identity["model_fingerprint"] = model_fingerprint(entry)
            self._identity = identity
        return self._identity

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.journal_dir / f"{identity_version(self.identity)}.sqlite")
        return self._journal

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def cost_of(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.api.price_input_per_m + output_tokens * self.api.price_output_per_m) / 1e6

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        """All samples of every request, in request order then sample index (fewer when the budget ran out).

        Raises ApiError when a request is refused or keeps failing; completed samples stay journaled.
        """
        with self._lock:
            identity, journal = self.identity, self.journal
            done, pending = journal.split(identity, requests)
            run = _Run(self, identity, journal, requests, done, pending, progress)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(run.execute())
            else:  # called from inside an event loop: run ours on a thread of its own
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    pool.submit(asyncio.run, run.execute()).result()
            return run.finish()

    def score_candidates(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
        """Candidate probabilities from the top logprobs the endpoint returns (see ``openai_scoring``)."""
        from rd_pipeline.generation.openai_scoring import score_with_top_logprobs

        with self._lock:
            return score_with_top_logprobs(self, requests)


class _Run:
    """The state of one generate() call."""

    def __init__(
        self,
        generator: OpenAIGenerator,
        identity: dict[str, str],
        journal: Journal,
        requests: Sequence[GenerationRequest],
        done: dict[tuple[int, int], Completion],
        pending: list[PendingSample],
        progress: ProgressCallback | None,
    ) -> None:
        self.gen = generator
        self.api = generator.api
        self.identity = identity
        self.journal = journal
        self.requests = requests
        self.results = dict(done)
        self.progress = progress
        self.aliases: dict[str, list[tuple[int, int]]] = {}
        self.total = sum(r.params.n for r in requests)
        self.stats = GenerationStats(samples_requested=self.total, samples_from_journal=len(done))
        self.units = self._plan(pending)
        self.stopping = False
        self.errors: list[ApiError] = []
        self.reserved_usd = 0.0
        self.not_sent = 0
        self.topups = 0
        self.estimated_usage = 0
        self._last_progress = 0.0

    def _plan(self, pending: list[PendingSample]) -> list[_Unit]:
        """One unit per request with pending samples; a key that repeats an earlier one is sent only once."""
        pending_keys = {p.key for p in pending}
        units = []
        for position, request in enumerate(self.requests):
            indices = []
            for index in range(request.params.n):
                key = sample_key(self.identity, request, index)
                if key not in pending_keys:
                    continue
                if key in self.aliases:
                    self.aliases[key].append((position, index))
                    continue
                self.aliases[key] = [(position, index)]
                indices.append(index)
            if indices:
                whole = indices == list(range(request.params.n))
                seed = request.params.seed if whole else derived_seed(request.params.seed, indices[0])
                units.append(_Unit(position, request, indices, seed))
        return units

    async def execute(self) -> None:
        self._report(force=True)
        if not self.units:
            return
        self.limiter = RateLimiter(self.api.requests_per_minute, self.api.tokens_per_minute)
        async with ChatClient(self.api, self.gen.model_name, self.gen.backoff_base_s) as client:
            self.client = client
            await asyncio.gather(*(self._run_unit(unit) for unit in self.units))
            self.failed_attempts = client.failed_attempts

    def _payload(self, unit: _Unit) -> dict[str, Any]:
        params = unit.request.params
        payload: dict[str, Any] = {
            "model": self.gen.model_name,
            "messages": [dict(m) for m in unit.request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": unit.seed,
        }
        if len(unit.indices) > 1:
            payload["n"] = len(unit.indices)
        return payload

    async def _run_unit(self, unit: _Unit) -> None:
        result = await self._send(unit)
        if result is None:
            return
        leftovers = unit.indices[len(result.texts) :]
        if leftovers:
            self.topups += len(leftovers)
            base = unit.request.params.seed
            await asyncio.gather(
                *(
                    self._run_unit(_Unit(unit.position, unit.request, [i], derived_seed(base, i)))
                    for i in leftovers
                )
            )

    async def _send(self, unit: _Unit) -> ChatResult | None:
        async with self.client.slot() as slot:
            if self.stopping:
                self.not_sent += len(unit.indices)
                return None
            params = unit.request.params
            input_estimate = estimate_input_tokens(unit.request)
            output_estimate = params.max_new_tokens * len(unit.indices)
            cost_estimate = self.gen.cost_of(input_estimate, output_estimate)
            budget = self.api.max_budget_usd
            if budget is not None and self.gen.spent_usd + self.reserved_usd + cost_estimate > budget:
                self._stop_for_budget(unit)
                return None
            await self.limiter.acquire(input_estimate + output_estimate)
            self.reserved_usd += cost_estimate
            try:
                result = await self.client.chat(self._payload(unit), slot, should_stop=lambda: self.stopping)
            except RequestAbandoned:
                self.limiter.settle(input_estimate + output_estimate, 0)
                return None
            except ApiError as error:
                self.limiter.settle(input_estimate + output_estimate, 0)
                if not self.errors:
                    log.error("%s; stopping: no new requests will be sent", error)
                self.errors.append(error)
                self.stopping = True
                return None
            finally:
                self.reserved_usd -= cost_estimate
        self._account(unit, result, input_estimate)
        return result

    def _stop_for_budget(self, unit: _Unit) -> None:
        if not self.stats.budget_exhausted:
            log.warning(
                "budget of $%.4f for %s at %s would be exceeded (spent $%.4f, in flight up to $%.4f): sending"
                " no more requests; completed samples are kept in the journal, and a rerun with a larger"
                " max_budget_usd generates only the missing ones",
                self.api.max_budget_usd,
                self.gen.model_name,
                self.api.base_url,
                self.gen.spent_usd,
                self.reserved_usd,
            )
        self.stats.budget_exhausted = True
        self.stopping = True
        self.not_sent += len(unit.indices)

    def _account(self, unit: _Unit, result: ChatResult, input_estimate: int) -> None:
        texts = result.texts[: len(unit.indices)]
        if result.prompt_tokens is None or result.completion_tokens is None:
            self.estimated_usage += 1
        prompt_tokens = result.prompt_tokens if result.prompt_tokens is not None else input_estimate
        completion_tokens = (
            result.completion_tokens
            if result.completion_tokens is not None
            else sum(len(t.encode()) // 3 + 1 for t in result.texts)
        )
        self.stats.backend_requests += 1
        self.stats.input_tokens += prompt_tokens
        self.stats.output_tokens += completion_tokens
        cost = self.gen.cost_of(prompt_tokens, completion_tokens)
        self.stats.cost_usd += cost
        self.gen.spent_usd += cost
        estimate = estimate_input_tokens(unit.request) + unit.request.params.max_new_tokens * len(
            unit.indices
        )
        self.limiter.settle(estimate, prompt_tokens + completion_tokens)

        share, extra = divmod(completion_tokens, max(1, len(result.texts)))
        request = unit.request
        entries = []
        for offset, (index, text) in enumerate(zip(unit.indices, texts, strict=False)):
            completion = Completion(
                request.request_id,
                index,
                request.params.temperature,
                text,
                prompt_tokens,
                share + (1 if offset < extra else 0),
            )
            key = sample_key(self.identity, request, index)
            entries.append((key, completion))
            for position, alias_index in self.aliases[key]:
                alias = self.requests[position]
                self.results[(position, alias_index)] = replace(
                    completion, request_id=alias.request_id, sample_index=alias_index
                )
        self.journal.record(entries)
        self.stats.samples_generated += sum(len(self.aliases[key]) for key, _ in entries)
        self._report()

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= self.gen.progress_interval_s:
            self._last_progress = now
            self.progress(len(self.results), self.total, self.stats)

    def finish(self) -> tuple[list[Completion], GenerationStats]:
        self.stats.extra.update(
            {
                "failed_attempts": float(getattr(self, "failed_attempts", 0)),
                "topup_samples": float(self.topups),
                "samples_not_sent": float(self.not_sent),
                "requests_with_estimated_usage": float(self.estimated_usage),
            }
        )
        self._report(force=True)
        if self.errors:
            missing = self.total - len(self.results)
            raise ApiError(
                f"{len(self.errors)} request(s) failed and {missing} of {self.total} samples are missing "
                "(completed samples are journaled; a rerun sends only the missing ones). "
                f"First error: {self.errors[0]}",
                status=self.errors[0].status,
                retryable=self.errors[0].retryable,
            )
        ordered = sorted(self.results.items())
        return [completion for _, completion in ordered], self.stats
