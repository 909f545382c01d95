"""Scoring candidate continuations (``Generator.score_candidates``): journaling, and reading candidate
probabilities from the top logprobs an engine or server reports.

Results go to the generator's journal like completions, keyed by a hash of the identity, the messages and the
candidates, so a re-run scores nothing again. A request the backend could not score (a server that returns no
logprobs) is journaled as such; one it never attempted (budget exhausted) is not.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rd_pipeline.generation.base import CandidateProbabilities, Completion, GenerationStats, ScoringRequest
from rd_pipeline.generation.journal import Journal

TOP_LOGPROBS = 20
"""How many alternatives per position to ask an engine or server for (OpenAI's and vLLM's default maximum)."""
SCORING_MAX_TOKENS = 8
"""Tokens to generate when candidates are read from top logprobs: enough to tell "1]]" from "10]]", and for a
server that starts a new reply instead of continuing the prefill, to write the prefix again first."""


@dataclass(frozen=True)
class Scored:
    """What a backend made of one scoring request: candidate probabilities, or None if it could not tell."""

    probabilities: CandidateProbabilities | None
    input_tokens: int = 0
    output_tokens: int = 0


ScorePending = Callable[[list[ScoringRequest]], tuple[list[Scored | None], GenerationStats]]
"""Scores requests missing from the journal; None for a request it did not attempt (it is asked again later)."""


def scoring_key(identity: dict[str, str], request: ScoringRequest) -> str:
    """The journal key of one scoring request."""
    payload = {
        "identity": identity,
        "kind": "candidate_probabilities",
        "messages": list(request.messages),
        "candidates": list(request.candidates),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def journaled_scores(
    journal: Journal,
    identity: dict[str, str],
    requests: Sequence[ScoringRequest],
    score_pending: ScorePending,
) -> tuple[list[CandidateProbabilities | None], GenerationStats]:
    """Candidate probabilities per request: from the journal where present, else from ``score_pending``."""
    keys = [scoring_key(identity, request) for request in requests]
    found = journal.lookup(keys)
    results: dict[str, CandidateProbabilities | None] = {key: json.loads(found[key][0]) for key in found}
    pending = {key: request for key, request in zip(keys, requests, strict=True) if key not in found}
    stats = GenerationStats(
        samples_requested=len(requests), samples_from_journal=len(requests) - len(pending)
    )
    if pending:
        scored, backend_stats = score_pending(list(pending.values()))
        entries = []
        for (key, request), outcome in zip(pending.items(), scored, strict=True):
            if outcome is None:
                continue
            results[key] = outcome.probabilities
            text = json.dumps(outcome.probabilities, sort_keys=True)
            completion = Completion(
                request.request_id, 0, 0.0, text, outcome.input_tokens, outcome.output_tokens
            )
            entries.append((key, completion))
        journal.record(entries)
        stats.samples_generated = len(entries)
        stats.backend_requests = backend_stats.backend_requests
        stats.input_tokens = backend_stats.input_tokens
        stats.output_tokens = backend_stats.output_tokens
        stats.cost_usd = backend_stats.cost_usd
        stats.budget_exhausted = backend_stats.budget_exhausted
        stats.extra = dict(backend_stats.extra)
    return [results.get(key) for key in keys], stats


Position = tuple[str, Mapping[str, float]]
"""One generated position: the token chosen there and the top alternatives' logprobs (token text -> logprob)."""


def probabilities_from_top_logprobs(
    positions: Sequence[Position], candidates: Sequence[str], opening: str = "[["
) -> CandidateProbabilities | None:
    """Candidate probabilities read off the top logprobs of a generated continuation; None if no candidate shows.

    The candidates start at the first position when the reply continued the prefill (its text begins with a
    candidate), else right after the first ``opening`` the reply wrote (a server that began a new reply,
    "Rating: [[7]]"), else at the first position. A token that begins several candidates ("1" of "1]]" and
    "10]]") is followed down the chosen path when it was the chosen token; otherwise its probability goes to the
    shortest candidate it begins (the top logprobs say nothing about what follows it).
    """
    chosen_text = "".join(chosen for chosen, _ in positions)
    start = 0
    if not any(chosen_text.lstrip().startswith(c) for c in candidates):
        emitted = ""
        for index, (chosen, _) in enumerate(positions):
            if emitted.rstrip().endswith(opening):
                start = index
                break
            emitted += chosen
    found = _walk(positions, start, "", 1.0, candidates) if start < len(positions) else {}
    return found or None


def _walk(
    positions: Sequence[Position], index: int, emitted: str, mass: float, candidates: Sequence[str]
) -> dict[str, float]:
    chosen, top = positions[index]
    probabilities: dict[str, float] = {}
    for token, logprob in top.items():
        text = (emitted + token).lstrip()
        probability = mass * math.exp(logprob)
        if not text:
            matches = list(candidates)
        else:
            matches = [c for c in candidates if c.startswith(text) or text.startswith(c)]
        if not matches or not probability > 0:
            continue
        if len(matches) == 1:
            probabilities[matches[0]] = probabilities.get(matches[0], 0.0) + probability
        elif token == chosen and index + 1 < len(positions):
            for candidate, p in _walk(positions, index + 1, emitted + token, probability, candidates).items():
                probabilities[candidate] = probabilities.get(candidate, 0.0) + p
        elif text:
            shortest = min(matches, key=len)
            probabilities[shortest] = probabilities.get(shortest, 0.0) + probability
    return probabilities
