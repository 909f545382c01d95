"""LLM-as-judge: pointwise 1-10 ratings and pairwise comparisons in both orders.

Every verdict is obtained in up to three ways, recorded per verdict as its ``path``:

- ``probability``: where the backend can score continuations (transformers, vLLM, an OpenAI-compatible server
  that returns ``top_logprobs``), the judge's explanation is followed by a request for the verdict alone and a
  reply prefilled with ``Rating: [[`` / ``Verdict: [[``; the judge's next-token distribution over the valid
  verdicts gives a probability-weighted rating, or a soft preference P(A) + P(tie)/2, as AlpacaEval's
  weighted annotators do. Text is then only kept as the explanation.
- ``text``: the verdict parsed from the judge's explanation.
- ``retry``: an unparsable verdict is asked for again once at temperature 0 (verdict line alone, reply
  prefilled with the prefix); ``none`` when that fails too: recorded as None, never coerced.

Prompts, verdict formats and parsing are in ``rd_pipeline.labeling.judge_prompts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rd_pipeline.generation.base import (
    CandidateProbabilities,
    GenerationRequest,
    GenerationStats,
    Generator,
    Message,
    SamplingParams,
    ScoringRequest,
)
from rd_pipeline.labeling.judge_prompts import (
    PAIRWISE_CANDIDATES,
    PAIRWISE_PREFIX,
    PAIRWISE_RETRY,
    POINTWISE_CANDIDATES,
    POINTWISE_PREFIX,
    POINTWISE_RETRY,
    RETRY_MAX_NEW_TOKENS,
    VERDICT_PATHS,
    Verdict,
    VerdictPath,
    pairwise_messages,
    parse_pairwise,
    parse_pointwise,
    pointwise_messages,
)

JUDGE_VERSION = "verdict-probabilities-1"
"""Changes whenever the way verdicts are obtained changes; part of the versions of stored judgments."""


@dataclass(frozen=True)
class PointwiseJudgment:
    """A rating of one response: ``score`` in 1-10, or None when no verdict could be had.

    ``path`` says where the score came from (see the module docstring); ``probabilities`` is the judge's
    distribution over the ratings (normalized) on the probability path, and ``verdict_mass`` the share of its
    next-token probability that fell on a valid rating at all.
    """

    key: str
    score: float | None
    text: str
    retried: bool
    path: VerdictPath = "text"
    probabilities: dict[str, float] | None = None
    verdict_mass: float | None = None


@dataclass(frozen=True)
class PairwiseJudgment:
    """A comparison of response_1 with response_2, judged in both orders.

    ``preference`` is for response_1, in [0, 1]: with text verdicts in both orders 1.0 (better), 0.5 (tie, or
    the two orders disagree) or 0.0 (worse); where either order has verdict probabilities, the mean of the two
    orders' soft preferences (P(response_1 better) + P(tie) / 2). None when either order has no verdict.
    ``consistent`` is whether both orders lean the same way. ``verdict_forward`` / ``verdict_backward`` are the
    text verdicts (A = the response shown first), ``paths`` where each order's verdict came from.
    """

    key: str
    preference: float | None
    consistent: bool
    verdict_forward: Verdict | None
    verdict_backward: Verdict | None
    texts: tuple[str, str]
    retried: bool
    paths: tuple[VerdictPath, VerdictPath] = ("text", "text")
    preference_forward: float | None = None
    preference_backward: float | None = None


def add_stats(total: GenerationStats, part: GenerationStats) -> GenerationStats:
    """The sum of two generation stats (``budget_exhausted`` if either was)."""
    extra = dict(total.extra)
    for name, value in part.extra.items():
        extra[name] = extra.get(name, 0.0) + value
    return GenerationStats(
        samples_requested=total.samples_requested + part.samples_requested,
        samples_generated=total.samples_generated + part.samples_generated,
        samples_from_journal=total.samples_from_journal + part.samples_from_journal,
        backend_requests=total.backend_requests + part.backend_requests,
        input_tokens=total.input_tokens + part.input_tokens,
        output_tokens=total.output_tokens + part.output_tokens,
        cost_usd=total.cost_usd + part.cost_usd,
        budget_exhausted=total.budget_exhausted or part.budget_exhausted,
        extra=extra,
    )


def _check_unique(keys: Sequence[str]) -> None:
    if len(set(keys)) != len(keys):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"judge item keys must be unique; repeated: {duplicates[:5]}")


@dataclass(frozen=True)
class _VerdictFormat:
    prefix: str
    retry_prompt: str
    candidates: tuple[str, ...]
    parse: Callable[[str, Sequence[str]], object]


_POINTWISE = _VerdictFormat(POINTWISE_PREFIX, POINTWISE_RETRY, POINTWISE_CANDIDATES, parse_pointwise)
_PAIRWISE = _VerdictFormat(PAIRWISE_PREFIX, PAIRWISE_RETRY, PAIRWISE_CANDIDATES, parse_pairwise)


@dataclass(frozen=True)
class _Task:
    """One verdict to obtain: the judge's conversation and the texts it judges."""

    messages: tuple[Message, ...]
    judged: tuple[str, ...]


@dataclass(frozen=True)
class _Outcome:
    text: str
    parsed: object | None
    probabilities: dict[str, float] | None
    mass: float | None
    retried: bool

    @property
    def path(self) -> VerdictPath:
        if self.probabilities is not None:
            return "probability"
        if self.parsed is None:
            return "none"
        return "retry" if self.retried else "text"


def _verdict_turn(messages: Sequence[Message], text: str, fmt: _VerdictFormat) -> tuple[Message, ...]:
    """The conversation that asks for the verdict alone after the judge's explanation, reply prefilled."""
    return (
        *messages,
        {"role": "assistant", "content": text},
        {"role": "user", "content": fmt.retry_prompt},
        {"role": "assistant", "content": fmt.prefix},
    )


def _normalized(
    probabilities: CandidateProbabilities | None, candidates: Sequence[str]
) -> tuple[dict[str, float] | None, float | None]:
    """The distribution renormalized over the candidates, and the mass they had; (None, None) if none."""
    if probabilities is None:
        return None, None
    masses = {c: float(probabilities.get(c, 0.0)) for c in candidates}
    total = sum(m for m in masses.values() if math.isfinite(m) and m > 0)
    if not total > 0:
        return None, None
    return {c: (m / total if math.isfinite(m) and m > 0 else 0.0) for c, m in masses.items()}, total


def _collect_verdicts(
    generator: Generator, tasks: dict[str, _Task], fmt: _VerdictFormat, params: SamplingParams
) -> tuple[dict[str, _Outcome], GenerationStats]:
    """Every task's verdict: the judge's explanation, then its verdict probabilities where the backend gives
    them, else the verdict parsed from the text, with one temperature-0 follow-up for each unparsable one.

    The follow-up (and the probability request) asks for the verdict line alone and starts the judge's reply with
    ``fmt.prefix`` (e.g. ``Rating: [[``), so that even a small judge only has to write the verdict itself.
    """
    requests = [GenerationRequest(rid, task.messages, params) for rid, task in tasks.items()]

    def verdict_request(request: GenerationRequest, text: str) -> ScoringRequest:
        turn = _verdict_turn(tasks[request.request_id].messages, text, fmt)
        return ScoringRequest(request.request_id, turn, fmt.candidates)

    with generator.scoring_follow_ups(verdict_request):  # a local backend scores them on the decode's cache
        completions, stats = generator.generate(requests)
    texts = {c.request_id: c.text for c in completions if c.sample_index == 0}
    verdict_turns = {
        rid: _verdict_turn(task.messages, texts.get(rid, ""), fmt) for rid, task in tasks.items()
    }
    # Only explanations the judge wrote are followed by a verdict request (none where a budget cut it short).
    scoring = [
        ScoringRequest(rid, turn, fmt.candidates) for rid, turn in verdict_turns.items() if rid in texts
    ]
    distributions, scoring_stats = generator.score_candidates(scoring)
    stats = add_stats(stats, scoring_stats)
    normalized = dict.fromkeys(tasks, (None, None)) | {
        request.request_id: _normalized(d, fmt.candidates)
        for request, d in zip(scoring, distributions, strict=True)
    }
    failed = [
        rid
        for rid, task in tasks.items()
        if normalized[rid][0] is None and fmt.parse(texts.get(rid, ""), task.judged) is None
    ]
    if failed:
        # The verdict after the prefix is a few tokens ("10]]"); a longer allowance would only let the judge ramble.
        retry_params = SamplingParams(
            temperature=0.0,
            n=1,
            max_new_tokens=min(params.max_new_tokens, RETRY_MAX_NEW_TOKENS),
            top_p=1.0,
            seed=params.seed,
        )
        retries = [GenerationRequest(f"{rid}:retry", verdict_turns[rid], retry_params) for rid in failed]
        retry_completions, retry_stats = generator.generate(retries)
        stats = add_stats(stats, retry_stats)
        for completion in retry_completions:
            if completion.sample_index == 0:
                texts[completion.request_id.removesuffix(":retry")] = fmt.prefix + completion.text
    outcomes = {}
    for rid, task in tasks.items():
        text = texts.get(rid, "")
        probabilities, mass = normalized[rid]
        parsed = fmt.parse(text, task.judged)
        outcomes[rid] = _Outcome(text, parsed, probabilities, mass, rid in failed)
    return outcomes, stats


def judge_pointwise(
    generator: Generator,
    items: Sequence[tuple[str, str, str]],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[PointwiseJudgment], GenerationStats]:
    """Rate each (key, instruction, response); returns the judgments in item order and the summed stats."""
    _check_unique([key for key, _, _ in items])
    tasks = {
        f"pointwise:{key}": _Task(tuple(pointwise_messages(inst, resp)), (resp,)) for key, inst, resp in items
    }
    params = SamplingParams(temperature=temperature, n=1, max_new_tokens=max_new_tokens, seed=seed)
    outcomes, stats = _collect_verdicts(generator, tasks, _POINTWISE, params)
    judgments = []
    for key, _, _ in items:
        outcome = outcomes[f"pointwise:{key}"]
        score = outcome.parsed
        if outcome.probabilities is not None:
            score = sum(p * float(c.removesuffix("]]")) for c, p in outcome.probabilities.items())
        judgments.append(
            PointwiseJudgment(
                key,
                score,  # type: ignore[arg-type]
                outcome.text,
                outcome.retried,
                outcome.path,
                outcome.probabilities,
                outcome.mass,
            )
        )
    return judgments, stats


_PREFERENCE_FORWARD: dict[str, float] = {"A": 1.0, "B": 0.0, "tie": 0.5}  # response_1 shown as A
_PREFERENCE_BACKWARD: dict[str, float] = {"A": 0.0, "B": 1.0, "tie": 0.5}  # response_1 shown as B


def _order_preference(outcome: _Outcome, first_shown_as: Literal["A", "B"]) -> float | None:
    """response_1's preference from one order's verdict: soft where probabilities exist, else 1 / 0.5 / 0."""
    if outcome.probabilities is not None:
        return outcome.probabilities[f"{first_shown_as}]]"] + 0.5 * outcome.probabilities["C]]"]
    if outcome.parsed is None:
        return None
    table = _PREFERENCE_FORWARD if first_shown_as == "A" else _PREFERENCE_BACKWARD
    return table[outcome.parsed]  # type: ignore[index]


def _combine_orders(forward: _Outcome, backward: _Outcome) -> tuple[float | None, bool]:
    """response_1's preference over both orders and whether the orders lean the same way."""
    p_forward, p_backward = _order_preference(forward, "A"), _order_preference(backward, "B")
    if p_forward is None or p_backward is None:
        return None, False
    if forward.probabilities is None and backward.probabilities is None:
        consistent = p_forward == p_backward
        return (p_forward if consistent else 0.5), consistent
    lean_forward, lean_backward = p_forward - 0.5, p_backward - 0.5
    consistent = lean_forward * lean_backward > 0 or lean_forward == lean_backward == 0
    return (p_forward + p_backward) / 2, consistent


def judge_pairwise(
    generator: Generator,
    items: Sequence[tuple[str, str, str, str]],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[PairwiseJudgment], GenerationStats]:
    """Compare response_1 with response_2 for each (key, instruction, response_1, response_2).

    Each pair is judged with response_1 first and again with it second; returns the judgments in item
    order and the summed stats.
    """
    _check_unique([item[0] for item in items])
    tasks: dict[str, _Task] = {}
    for key, instruction, first, second in items:
        tasks[f"pairwise:{key}:fwd"] = _Task(
            tuple(pairwise_messages(instruction, first, second)), (first, second)
        )
        tasks[f"pairwise:{key}:bwd"] = _Task(
            tuple(pairwise_messages(instruction, second, first)), (second, first)
        )
    params = SamplingParams(temperature=temperature, n=1, max_new_tokens=max_new_tokens, seed=seed)
    outcomes, stats = _collect_verdicts(generator, tasks, _PAIRWISE, params)
    judgments = []
    for key, _, _, _ in items:
        forward, backward = outcomes[f"pairwise:{key}:fwd"], outcomes[f"pairwise:{key}:bwd"]
        preference, consistent = _combine_orders(forward, backward)
        judgments.append(
            PairwiseJudgment(
                key=key,
                preference=preference,
                consistent=consistent,
                verdict_forward=forward.parsed,  # type: ignore[arg-type]
                verdict_backward=backward.parsed,  # type: ignore[arg-type]
                texts=(forward.text, backward.text),
                retried=forward.retried or backward.retried,
                paths=(forward.path, backward.path),
                preference_forward=_order_preference(forward, "A"),
                preference_backward=_order_preference(backward, "B"),
            )
        )
    return judgments, stats


def judge_summary(
    pointwise: Sequence[PointwiseJudgment] = (), pairwise: Sequence[PairwiseJudgment] = ()
) -> dict[str, float]:
    """Parse rate, retry rate, mean score, position-consistency rate and verdicts per path, for metadata.

    ``*_verdicts_<path>`` count verdicts by where they came from (a pairwise judgment has one per order);
    ``*_parse_rate`` is the share of judgments that got a score or preference by any path.
    """
    summary: dict[str, float] = {}
    if pointwise:
        scores = [j.score for j in pointwise if j.score is not None]
        summary["pointwise_n"] = float(len(pointwise))
        summary["pointwise_parse_rate"] = len(scores) / len(pointwise)
        summary["pointwise_retry_rate"] = sum(j.retried for j in pointwise) / len(pointwise)
        summary["pointwise_mean_score"] = sum(scores) / len(scores) if scores else float("nan")
        for path in VERDICT_PATHS:
            summary[f"pointwise_verdicts_{path}"] = float(sum(j.path == path for j in pointwise))
        masses = [j.verdict_mass for j in pointwise if j.verdict_mass is not None]
        summary["pointwise_mean_verdict_mass"] = sum(masses) / len(masses) if masses else float("nan")
    if pairwise:
        parsed = [j for j in pairwise if j.preference is not None]
        summary["pairwise_n"] = float(len(pairwise))
        summary["pairwise_parse_rate"] = len(parsed) / len(pairwise)
        summary["pairwise_retry_rate"] = sum(j.retried for j in pairwise) / len(pairwise)
        summary["position_consistency_rate"] = (
            sum(j.consistent for j in parsed) / len(parsed) if parsed else float("nan")
        )
        for path in VERDICT_PATHS:
            summary[f"pairwise_verdicts_{path}"] = float(sum(j.paths.count(path) for j in pairwise))
    return summary
