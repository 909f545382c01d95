"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ``transformers serve``).

Requests run concurrently (``openai_requests``: bounded by ``max_concurrency``, paced by the RPM/TPM limits) and
every sample is written to the journal as soon as its response arrives, so a killed run resumes with only the
samples it lacked. Each request asks for all of a prompt's pending samples at once (``n`` plus a seed); when the
server returns fewer choices, the rest are asked one by one, each with its own seed derived from the base seed
and the sample index.

Budget: before each request, the money already spent on this endpoint and model (``spent_before_usd``: earlier
runs, which the caller reads from its spend ledger, plus this generator's own spend), plus a worst-case estimate
of the requests in flight and of this one, is compared with ``max_budget_usd``. When it would be exceeded,
nothing more is sent, the requests in flight finish, and ``generate()`` returns only the completed samples with
``stats.budget_exhausted`` set: callers must handle partial results in that case. What each answered request
cost is journaled with its samples (``SpendEntry``), so spend survives a crash and can be imported into a ledger.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rd_pipeline.config import ApiConfig, ModelConfig
from rd_pipeline.generation.api_client import ApiError, fetch_model_entry, model_fingerprint
from rd_pipeline.generation.base import (
    CandidateProbabilities,
    Completion,
    GenerationRequest,
    GenerationStats,
    ProgressCallback,
    ScoringRequest,
)
from rd_pipeline.generation.journal import SpendEntry, identity_version
from rd_pipeline.generation.loop import Batches, FinishedBatch, JournaledGenerator, JournalRun
from rd_pipeline.generation.openai_requests import RequestLoop
from rd_pipeline.observed import SourceUnavailable, observe

log = logging.getLogger(__name__)

__all__ = ["ApiError", "OpenAIGenerator"]


class OpenAIGenerator(JournaledGenerator):
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
        self.spent_usd = 0.0  # by this instance
        self.spent_before_usd = 0.0  # on this endpoint and model before this instance (set by the caller)
        self.spend_label = ""  # recorded with each spend entry: which step and run spent it
        self.answers_by_endpoint: dict[str, int] = {}  # over this instance's lifetime, per replica
        self._identity: dict[str, str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        urls = self.api.endpoint_urls()
        where = f"base_url={urls[0]!r}" if len(urls) == 1 else f"base_urls={urls!r}"
        return f"OpenAIGenerator({where}, model={self.model_name!r})"

    def observe_identity(self) -> dict[str, str]:
        """Backend, model name and what the endpoint reports about the model; never the URL of a replica.

        Asks GET /models once per instance; when the listing is unavailable, the identity last observed under
        ``journal_dir`` is used, and with none recorded it raises IdentityUnobservable (see ``observed``).
        """
        if self._identity is None:
            identity = {"backend": "openai", "model": self.model_name}
            listing = f"GET /models at {', '.join(self.api.endpoint_urls())}"
            identity.update(observe(self.journal_dir, dict(identity), self._listed_identity, listing))
            if self.api.sampling_extras:
                identity["sampling_extras"] = json.dumps(self.api.sampling_extras, sort_keys=True)
            self._identity = identity
        return dict(self._identity)

    def _listed_identity(self) -> dict[str, str]:
        """The identity parts from the endpoint's GET /models entry ({} when it does not list the model)."""
        entry = replicas_model_entry(self.api, self.model_name)
        if entry is None:
            log.info(
                "no endpoint of %s lists model %r; identity holds no model fingerprint",
                ", ".join(self.api.endpoint_urls()),
                self.model_name,
            )
            return {}
        listed = {"model_fingerprint": model_fingerprint(entry)}
        if entry.get("owned_by") is not None:
            listed["owned_by"] = str(entry["owned_by"])
        return listed

    @property
    def identity(self) -> dict[str, str]:
        """The identity ``observe_identity()`` observed (``generate()`` observes it first); no network call."""
        if self._identity is None:
            raise RuntimeError(f"{self!r}: call observe_identity() before reading its identity")
        return dict(self._identity)

    def journal_path(self) -> Path:
        return self.journal_dir / f"{identity_version(self.observe_identity())}.sqlite"

    @property
    def spend_endpoint(self) -> str:
        """The endpoint that spend and budgets are counted under: the first configured base URL."""
        return self.api.endpoint_urls()[0]

    def spend_entry(self, input_tokens: int, output_tokens: int, cost_usd: float) -> SpendEntry:
        """The record of one answered request's cost, to journal with what it paid for."""
        return SpendEntry(
            uuid.uuid4().hex,
            self.spend_endpoint,
            self.model_name,
            self.spend_label,
            input_tokens,
            output_tokens,
            cost_usd,
            datetime.now(timezone.utc).isoformat(),
        )

    def cost_of(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.api.price_input_per_m + output_tokens * self.api.price_output_per_m) / 1e6

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        """All samples of every request, in request order then sample index (fewer when the budget ran out).

        Raises ApiError when a request is refused or keeps failing; completed samples stay journaled.
        """
        with self._lock:
            return super().generate(requests, progress)

    def decode(self, run: JournalRun) -> Batches:
        """Send the pending samples concurrently from an event loop on a thread of its own, yielding each answered
        request's samples as they arrive; raises ApiError, once the requests in flight have finished, when some
        failed."""
        sending = RequestLoop(self, run)
        answered: queue.SimpleQueue[FinishedBatch | None] = queue.SimpleQueue()
        sending.deliver = answered.put
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(asyncio.run, sending.execute())
            future.add_done_callback(lambda _: answered.put(None))
            try:
                while (batch := answered.get()) is not None:
                    yield batch
            finally:
                sending.stopping = True  # when the caller stops early: send nothing more
                future.result()
        sending.finish()

    def score_candidates(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
        """Candidate probabilities from the top logprobs the endpoint returns (see ``openai_scoring``)."""
        from rd_pipeline.generation.openai_scoring import score_with_top_logprobs

        with self._lock:
            return score_with_top_logprobs(self, requests)


def replicas_model_entry(api: ApiConfig, model: str) -> dict[str, Any] | None:
    """The GET /models entry the replicas agree on (None when none lists ``model``).

    Every replica is asked, in sorted order, so the answer does not depend on the order of ``base_urls``;
    replicas that do not answer are skipped. Replicas reporting different models are a configuration error.
    """
    entries, unavailable = {}, []
    for url in sorted(api.endpoint_urls()):
        try:
            entry = fetch_model_entry(api, model, base_url=url)
        except SourceUnavailable as error:
            unavailable.append(str(error))
            continue
        if entry is not None:
            entries[url] = entry
    if not entries and unavailable:
        raise SourceUnavailable("; ".join(unavailable))
    fingerprints = {url: model_fingerprint(entry) for url, entry in entries.items()}
    if len(set(fingerprints.values())) > 1:
        raise ValueError(
            f"api.base_urls must be replicas of one model, but their GET /models entries for {model!r} "
            f"differ: {', '.join(f'{url} -> {fp}' for url, fp in fingerprints.items())}"
        )
    return next(iter(entries.values()), None)
