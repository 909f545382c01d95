"""The one generation interface every backend implements."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rd_pipeline.config import ModelConfig
from rd_pipeline.models import ResolvedModel

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    n: int = 1
    max_new_tokens: int = 256
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    """Ask for ``params.n`` samples for one conversation. ``request_id`` is the caller's key for it.

    When the last message is the assistant's, it is a prefilled reply that local backends continue; API backends
    send it as it is (servers differ in whether they continue it).
    """

    request_id: str
    messages: tuple[Message, ...]
    params: SamplingParams


@dataclass(frozen=True)
class ScoringRequest:
    """Ask how likely each of ``candidates`` is to continue a conversation (e.g. a judge's verdict after
    ``Rating: [[``). The last message is the assistant's prefilled reply; ``request_id`` is the caller's key."""

    request_id: str
    messages: tuple[Message, ...]
    candidates: tuple[str, ...]


CandidateProbabilities = dict[str, float]
"""Candidate -> probability that it continues the conversation (over the whole vocabulary, not renormalized)."""


@dataclass(frozen=True)
class Completion:
    request_id: str
    sample_index: int
    temperature: float
    text: str
    input_tokens: int
    output_tokens: int
    from_journal: bool = False


@dataclass
class GenerationStats:
    """What one generate() call did: samples made now vs. read back from the journal, tokens, cost."""

    samples_requested: int = 0
    samples_generated: int = 0
    samples_from_journal: int = 0
    backend_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    budget_exhausted: bool = False
    extra: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[int, int, GenerationStats], None]  # (samples done, samples total, stats)
FollowUp = Callable[[GenerationRequest, str], ScoringRequest | None]
"""(request, its completion's text) -> the scoring request that follows it (a judge's verdict turn), or None."""


class Generator(ABC):
    """Generates completions. ``identity`` says exactly which model produces them (hashed into versions)."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, str]:
        """Backend, model name, revision or weights fingerprint: everything that changes the outputs."""

    def observe_identity(self) -> dict[str, str]:
        """The identity, observing it first where that takes a network call (an API backend's model listing).

        Call this before reading ``identity`` on a generator that has not generated yet.
        """
        return dict(self.identity)

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        """All ``n`` samples of every request, in request order then sample index."""

    def score_candidates(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
        """Per request, the probability of each candidate continuation, or None where the backend cannot tell
        (the default: backends that can override this). Results are journaled like completions."""
        return [None] * len(requests), GenerationStats()

    def scoring_follow_ups(self, follow_up: FollowUp) -> contextlib.AbstractContextManager[None]:
        """While open, a backend may score each greedy completion's follow-up (``follow_up(request, text)``) as it
        decodes the completion, so that a ``score_candidates`` call for those follow-ups afterwards repeats no
        prefill (transformers); the default does nothing, and the results are the same either way."""
        return contextlib.nullcontext()

    def close(self) -> None:  # noqa: B027 - an optional hook; backends without resources keep this default
        """Release model memory or connections."""


def local_model_identity(backend: str, resolved: ResolvedModel, model: ModelConfig) -> dict[str, str]:
    """Everything that changes what a local backend (transformers, vLLM) produces for a request.

    Never a path: a checkpoint directory is known by its content fingerprint alone, so moving or copying it (or the
    whole RD_HOME) keeps its identity, and every sample it made is reused.
    """
    return {
        "backend": backend,
        "model": "" if resolved.kind == "local" else resolved.ref,
        "kind": resolved.kind,
        "revision": resolved.revision or "",
        "fingerprint": resolved.fingerprint,
        "dtype": model.dtype,
    }
