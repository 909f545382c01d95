"""Scoring a follow-up turn on the KV cache of the decode it follows (the transformers backend).

A judge writes an explanation, then is asked for its verdict alone in a follow-up turn whose candidate
continuations are scored (``rd_pipeline.labeling.judge``). The follow-up conversation begins with the explained
conversation and the explanation itself, so scoring it from scratch prefills again what the decode has just
prefilled and decoded. Here the decode's own KV cache is kept for a greedy batch: each follow-up's tokens after the
longest prefix it shares with its decoded row (the prompt, then the decoded tokens as far as they re-tokenize the
same) continue that row, with the columns it does not share masked out, and the candidates are scored on it as
``TransformersGenerator.score_candidates`` scores them (same token ids, same positions). A follow-up that does not
begin with its row's prompt is left to ordinary scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rd_pipeline.generation.transformers_cache import cache_arguments

FollowUpKey = tuple[tuple[int, ...], tuple[str, ...]]
"""A scored follow-up: its token ids and its candidates (what ``score_candidates`` would be asked)."""
CandidateTotals = Callable[[Any, Any, Any], list[list[float]]]
"""(last-position log-probabilities, cache, attention) -> per row, each candidate's total log-probability."""


@dataclass(frozen=True)
class FollowUpRow:
    """One decoded row's follow-up: the row, its prompt length, how many decoded tokens it shares after the prompt,
    and its remaining tokens (at least one)."""

    row: int
    prompt_length: int
    shared: int
    tail: tuple[int, ...]
    key: FollowUpKey


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def plan_follow_ups(
    prompts: Sequence[Sequence[int]],
    decoded: Sequence[Sequence[int]],
    follow_ups: Sequence[tuple[list[int], tuple[str, ...]] | None],
    cached_decoded: int,
) -> list[FollowUpRow]:
    """The rows whose follow-up (token ids, candidates) begins with the row's prompt; ``cached_decoded`` is how
    many decoded tokens per row the cache holds (the last decoded token is never fed to the model)."""
    rows = []
    for row, (prompt, tokens, follow_up) in enumerate(zip(prompts, decoded, follow_ups, strict=True)):
        if follow_up is None:
            continue
        ids, candidates = follow_up
        if len(ids) <= len(prompt) or ids[: len(prompt)] != list(prompt):
            continue
        rest = ids[len(prompt) :]
        shared = min(_common_prefix(rest, tokens[:cached_decoded]), len(rest) - 1)
        rows.append(FollowUpRow(row, len(prompt), shared, tuple(rest[shared:]), (tuple(ids), candidates)))
    return rows


def _follow_up_inputs(
    rows: Sequence[FollowUpRow], width: int, cached: int, pad_id: int
) -> tuple[Any, Any, Any]:
    """Input ids of the rows' tails (left-padded), the attention mask over cache and tails (the prompt and the
    shared decoded tokens of each row, then its tail), and the tails' positions."""
    import torch

    tail_width = max(len(r.tail) for r in rows)
    input_ids = torch.full((len(rows), tail_width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), cached + tail_width), dtype=torch.long)
    for index, r in enumerate(rows):
        attention[index, width - r.prompt_length : width + r.shared] = 1
        input_ids[index, tail_width - len(r.tail) :] = torch.tensor(r.tail, dtype=torch.long)
        attention[index, cached + tail_width - len(r.tail) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, cached:]
    return input_ids, attention, positions


def score_follow_ups(
    model: Any,
    cache: Any,
    width: int,
    rows: Sequence[FollowUpRow],
    pad_id: int,
    candidate_totals: CandidateTotals,
) -> dict[FollowUpKey, dict[str, float]]:
    """Candidate probabilities of each row's follow-up, continuing the decode's ``cache`` (prompts ``width``
    columns wide, left-padded) after the tokens each row shares; the cache is cut to the rows and consumed."""
    import math

    import torch

    if not rows:
        return {}
    if len({r.key[1] for r in rows}) != 1:
        raise ValueError("follow-ups scored on one cache must share their candidates")
    cache.batch_select_indices(torch.tensor([r.row for r in rows], dtype=torch.long))
    needed = width + max(r.shared for r in rows)
    if cache.get_seq_length() > needed:
        cache.crop(needed - cache.get_seq_length())  # negative: tokens to remove
    input_ids, attention, positions = _follow_up_inputs(rows, width, needed, pad_id)
    device = model.device
    cache_name, last_only = cache_arguments(model)
    output = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **last_only,
        **{cache_name: cache},
    )
    first = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
    del output
    totals = candidate_totals(first, cache, attention)
    return {
        r.key: {c: math.exp(total) for c, total in zip(r.key[1], row_totals, strict=True)}
        for r, row_totals in zip(rows, totals, strict=True)
    }
