"""The request loop of the ``openai`` backend (``openai_backend.OpenAIGenerator``): one generate() call's requests.

Requests run concurrently (bounded by ``max_concurrency``, paced by the RPM/TPM limits) and each answered request's
samples are delivered, to be journaled, as soon as it arrives. Each request asks for all of a prompt's pending
samples at once (``n`` plus a seed); when the server returns fewer choices, the rest are asked one by one, each with
its own seed derived from the base seed and the sample index. Before each request the budget is checked (see
``openai_backend``); when it would be exceeded, nothing more is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rd_pipeline.generation.api_client import (
    ApiError,
    ChatClient,
    ChatResult,
    RequestAbandoned,
    estimate_input_tokens,
)
from rd_pipeline.generation.base import Completion, GenerationRequest
from rd_pipeline.generation.journal import PendingSample
from rd_pipeline.generation.loop import FinishedBatch, JournalRun
from rd_pipeline.generation.openai_scoring import ScoringEndpoint
from rd_pipeline.generation.rate_limit import RateLimiter

log = logging.getLogger(__name__)


def derived_seed(base_seed: int, sample_index: int) -> int:
    """The seed of a sample asked for on its own: a hash of the base seed and the sample index (31 bits)."""
    digest = hashlib.sha256(f"{base_seed}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class _Unit:
    """One HTTP request to make: some pending samples of one request, with the seed to send (n = their count)."""

    request: GenerationRequest
    samples: list[PendingSample]
    seed: int


class RequestEndpoint(ScoringEndpoint, Protocol):
    """What the request loop needs of the generator it sends for (``OpenAIGenerator``): what scoring needs, the
    endpoint spend is counted under, and the answers per replica (added to as requests are answered)."""

    answers_by_endpoint: dict[str, int]

    @property
    def spend_endpoint(self) -> str: ...


class RequestLoop:
    """The requests of one generate() call: budget, rate limits, retries and top-ups; each answered request's
    samples go to ``deliver``."""

    def __init__(self, generator: RequestEndpoint, run: JournalRun) -> None:
        self.gen = generator
        self.api = generator.api
        self.run = run
        self.deliver: Callable[[FinishedBatch], None] = lambda batch: None
        self.units = self._plan(run.pending)
        self.stopping = False
        self.errors: list[ApiError] = []
        self.reserved_usd = 0.0
        self.not_sent = 0
        self.topups = 0
        self.estimated_usage = 0
        self.failed_attempts = 0

    @staticmethod
    def _plan(pending: list[PendingSample]) -> list[_Unit]:
        """One unit per request with pending samples: all of them in one request, with the request's own seed
        when it asks for every index."""
        by_position: dict[int, list[PendingSample]] = {}
        for sample in pending:
            by_position.setdefault(sample.position, []).append(sample)
        units = []
        for samples in by_position.values():
            request, first = samples[0].request, samples[0].sample_index
            whole = [sample.sample_index for sample in samples] == list(range(request.params.n))
            seed = request.params.seed if whole else derived_seed(request.params.seed, first)
            units.append(_Unit(request, samples, seed))
        return units

    async def execute(self) -> None:
        self.limiter = RateLimiter(self.api.requests_per_minute, self.api.tokens_per_minute)
        async with ChatClient(self.api, self.gen.model_name, self.gen.backoff_base_s) as client:
            self.client = client
            await asyncio.gather(*(self._run_unit(unit) for unit in self.units))
            self.failed_attempts = client.failed_attempts
            for url, answered in client.endpoints.answered_by_url().items():
                self.gen.answers_by_endpoint[url] = self.gen.answers_by_endpoint.get(url, 0) + answered

    def _payload(self, unit: _Unit) -> dict[str, Any]:
        params = unit.request.params
        payload: dict[str, Any] = {
            "model": self.gen.model_name,
            "messages": [dict(m) for m in unit.request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": unit.seed,
            **self.api.sampling_extras,
        }
        if len(unit.samples) > 1:
            payload["n"] = len(unit.samples)
        return payload

    async def _run_unit(self, unit: _Unit) -> None:
        result = await self._send(unit)
        if result is None:
            return
        leftovers = unit.samples[len(result.texts) :]
        if leftovers:
            self.topups += len(leftovers)
            base = unit.request.params.seed
            await asyncio.gather(
                *(
                    self._run_unit(_Unit(unit.request, [sample], derived_seed(base, sample.sample_index)))
                    for sample in leftovers
                )
            )

    async def _send(self, unit: _Unit) -> ChatResult | None:
        async with self.client.slot() as slot:
            if self.stopping:
                self.not_sent += len(unit.samples)
                return None
            params = unit.request.params
            input_estimate = estimate_input_tokens(unit.request.messages)
            output_estimate = params.max_new_tokens * len(unit.samples)
            cost_estimate = self.gen.cost_of(input_estimate, output_estimate)
            budget = self.api.max_budget_usd
            spent = self.gen.spent_before_usd + self.gen.spent_usd
            if budget is not None and spent + self.reserved_usd + cost_estimate > budget:
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
        if not self.run.stats.budget_exhausted:
            log.warning(
                "budget of $%.4f for %s at %s would be exceeded (spent $%.4f in earlier runs and $%.4f in this"
                " one, in flight up to $%.4f): sending no more requests. Completed samples are kept in the"
                " journal; to spend more, raise api.max_budget_usd or run `rd budget reset`, and a rerun"
                " generates only the missing ones (`rd budget show` lists the spend)",
                self.api.max_budget_usd,
                self.gen.model_name,
                self.gen.spend_endpoint,
                self.gen.spent_before_usd,
                self.gen.spent_usd,
                self.reserved_usd,
            )
        self.run.stats.budget_exhausted = True
        self.stopping = True
        self.not_sent += len(unit.samples)

    def _account(self, unit: _Unit, result: ChatResult, input_estimate: int) -> None:
        """Settle the rate limits and the spend of an answered request and deliver its samples."""
        if result.prompt_tokens is None or result.completion_tokens is None:
            self.estimated_usage += 1
        prompt_tokens = result.prompt_tokens if result.prompt_tokens is not None else input_estimate
        completion_tokens = (
            result.completion_tokens
            if result.completion_tokens is not None
            else sum(len(t.encode()) // 3 + 1 for t in result.texts)
        )
        cost = self.gen.cost_of(prompt_tokens, completion_tokens)
        self.gen.spent_usd += cost
        estimate = input_estimate + unit.request.params.max_new_tokens * len(unit.samples)
        self.limiter.settle(estimate, prompt_tokens + completion_tokens)

        share, extra = divmod(completion_tokens, max(1, len(result.texts)))
        request = unit.request
        entries = [
            (
                sample.key,
                Completion(
                    request.request_id,
                    sample.sample_index,
                    request.params.temperature,
                    text,
                    prompt_tokens,
                    share + (1 if offset < extra else 0),
                ),
            )
            for offset, (sample, text) in enumerate(zip(unit.samples, result.texts, strict=False))
        ]
        spend = self.gen.spend_entry(prompt_tokens, completion_tokens, cost)
        self.deliver(FinishedBatch(entries, 1, prompt_tokens, completion_tokens, cost, spend))

    def finish(self) -> None:
        """Count what happened into the run's stats; raise ApiError when requests failed."""
        stats = self.run.stats
        stats.extra.update(
            {
                "failed_attempts": float(self.failed_attempts),
                "topup_samples": float(self.topups),
                "samples_not_sent": float(self.not_sent),
                "requests_with_estimated_usage": float(self.estimated_usage),
            }
        )
        if self.errors:
            missing = self.run.total - len(self.run.results)
            raise ApiError(
                f"{len(self.errors)} request(s) failed and {missing} of {self.run.total} samples are missing "
                "(completed samples are journaled; a rerun sends only the missing ones). "
                f"First error: {self.errors[0]}",
                status=self.errors[0].status,
                retryable=self.errors[0].retryable,
            )
