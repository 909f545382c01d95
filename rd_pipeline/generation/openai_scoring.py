"""Candidate probabilities through an OpenAI-compatible endpoint, from the ``top_logprobs`` it returns.

Each scoring request becomes one chat request at temperature 0 with ``logprobs`` and ``top_logprobs``, a few tokens
long; the conversation is sent as it is (its last message is the prefilled assistant reply: a server that continues
it answers with the verdict, one that starts a new reply writes the prefix again, and both are read). A server
that returns no logprobs, or refuses the request, gives None (the judge then reads the text verdict). Requests
share the generator's money budget, rate limits and retries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rd_pipeline.config import ApiConfig
from rd_pipeline.generation.api_client import ApiError, ChatClient, RequestAbandoned, estimate_input_tokens
from rd_pipeline.generation.base import (
    CandidateProbabilities,
    GenerationStats,
    ScoringRequest,
)
from rd_pipeline.generation.candidates import (
    SCORING_MAX_TOKENS,
    TOP_LOGPROBS,
    Scored,
    journaled_scores,
    probabilities_from_top_logprobs,
)
from rd_pipeline.generation.rate_limit import RateLimiter

if TYPE_CHECKING:
    from rd_pipeline.generation.journal import Journal, SpendEntry

log = logging.getLogger(__name__)


class ScoringEndpoint(Protocol):
    """What scoring needs of the generator it scores for (the openai backend's ``OpenAIGenerator``)."""

    api: ApiConfig
    model_name: str
    backoff_base_s: float
    journal: Journal
    spent_usd: float  # added to as scoring spends
    spent_before_usd: float

    def observe_identity(self) -> dict[str, str]: ...

    def cost_of(self, input_tokens: int, output_tokens: int) -> float: ...

    def spend_entry(self, input_tokens: int, output_tokens: int, cost_usd: float) -> SpendEntry: ...


def score_with_top_logprobs(
    generator: ScoringEndpoint, requests: Sequence[ScoringRequest]
) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
    """Candidate probabilities per request, journaled under the generator's identity."""
    identity, journal = generator.journal_identity(), generator.journal

    def score_pending(pending: list[ScoringRequest]) -> tuple[list[Scored | None], GenerationStats]:
        scoring = _Scoring(generator, pending)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(scoring.execute())
        else:  # called from inside an event loop: run ours on a thread of its own
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, scoring.execute()).result()
        return scoring.results, scoring.stats

    return journaled_scores(journal, identity, requests, score_pending)


def scoring_payload(model_name: str, request: ScoringRequest) -> dict[str, Any]:
    """The chat request that asks for the top logprobs of the next few tokens."""
    return {
        "model": model_name,
        "messages": [dict(m) for m in request.messages],
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": SCORING_MAX_TOKENS,
        "seed": 0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }


class _Scoring:
    """The state of one batch of scoring requests."""

    def __init__(self, generator: ScoringEndpoint, requests: list[ScoringRequest]) -> None:
        self.gen = generator
        self.api = generator.api
        self.requests = requests
        self.results: list[Scored | None] = [None] * len(requests)
        self.stats = GenerationStats()
        self.reserved_usd = 0.0

    async def execute(self) -> None:
        self.limiter = RateLimiter(self.api.requests_per_minute, self.api.tokens_per_minute)
        async with ChatClient(self.api, self.gen.model_name, self.gen.backoff_base_s) as client:
            await asyncio.gather(*(self._score(client, i) for i in range(len(self.requests))))

    async def _score(self, client: ChatClient, index: int) -> None:
        request = self.requests[index]
        estimate = estimate_input_tokens(request.messages)
        async with client.slot() as slot:
            cost_estimate = self.gen.cost_of(estimate, SCORING_MAX_TOKENS)
            budget = self.api.max_budget_usd
            spent = self.gen.spent_usd + self.gen.spent_before_usd
            if budget is not None and spent + self.reserved_usd + cost_estimate > budget:
                self.stats.budget_exhausted = True
                return
            await self.limiter.acquire(estimate + SCORING_MAX_TOKENS)
            self.reserved_usd += cost_estimate
            try:
                result = await client.chat(scoring_payload(self.gen.model_name, request), slot)
            except RequestAbandoned:
                self.limiter.settle(estimate + SCORING_MAX_TOKENS, 0)
                return
            except ApiError as error:
                self.limiter.settle(estimate + SCORING_MAX_TOKENS, 0)
                if error.retryable:  # not answered: asked again on the next run
                    log.warning(
                        "scoring %s failed, its verdict is read from text: %s", request.request_id, error
                    )
                    return
                log.warning(
                    "%s refuses logprob requests (%s); verdicts are read from text", client.endpoint, error
                )
                self.results[index] = Scored(None)
                return
            finally:
                self.reserved_usd -= cost_estimate
        prompt_tokens = result.prompt_tokens if result.prompt_tokens is not None else estimate
        completion_tokens = (
            result.completion_tokens if result.completion_tokens is not None else SCORING_MAX_TOKENS
        )
        self.limiter.settle(estimate + SCORING_MAX_TOKENS, prompt_tokens + completion_tokens)
        cost = self.gen.cost_of(prompt_tokens, completion_tokens)
        self.gen.spent_usd += cost
        self.gen.journal.record([], self.gen.spend_entry(prompt_tokens, completion_tokens, cost))
        self.stats.cost_usd += cost
        self.stats.backend_requests += 1
        self.stats.input_tokens += prompt_tokens
        self.stats.output_tokens += completion_tokens
        probabilities = None
        if result.logprobs is not None:
            probabilities = probabilities_from_top_logprobs(result.logprobs, request.candidates)
        self.results[index] = Scored(probabilities, prompt_tokens, completion_tokens)
