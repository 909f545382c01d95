"""Reward-model pairs (chosen, rejected) from labelled teacher and student responses."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rd_pipeline.config import LabelingConfig

JUDGE_SCALE = 9.0  # the width of the 1-10 judge scale; score gaps are divided by it to give margins


@dataclass(frozen=True)
class LabelledResponse:
    """One response with its label.

    Verifiable prompts carry ``correct`` (agreement with the prompt's majority answer) and
    ``vote_share`` (that majority's share); judged prompts carry ``score`` (1-10).
    """

    benchmark: str
    prompt_id: str
    prompt: str
    response: str
    source: Literal["teacher", "student"]
    correct: bool | None = None
    score: float | None = None
    vote_share: float | None = None


@dataclass(frozen=True)
class RewardPair:
    """A preference pair for one prompt; ``margin`` in [0, 1] says how sure the preference is."""

    benchmark: str
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    margin: float
    split: Literal["train", "heldout"]


def pair_split(benchmark: str, prompt_id: str, heldout_fraction: float) -> Literal["train", "heldout"]:
    """``"heldout"`` for a stable ``heldout_fraction`` share of prompts, else ``"train"``."""
    digest = hashlib.sha256(f"{benchmark}\x1fpairs\x1f{prompt_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction else "train"


def build_reward_pairs(rows: Iterable[LabelledResponse], cfg: LabelingConfig, seed: int) -> list[RewardPair]:
    """Pairs per prompt, at most ``cfg.max_pairs_per_prompt`` each, in a deterministic order.

    A prompt whose responses carry ``correct`` gives (correct, incorrect) pairs with the vote share as
    margin. A prompt whose responses carry ``score`` gives pairs whose score gap is at least
    ``cfg.pair_min_score_gap``, margin = gap / 9, largest gaps first. Responses with neither label are
    skipped, as are duplicate response texts. Each prompt's pairs are all ``"train"`` or all
    ``"heldout"``, by a stable hash of the prompt id. ``seed`` picks which pairs survive the cap.
    """
    groups: dict[tuple[str, str], list[LabelledResponse]] = {}
    for row in rows:
        groups.setdefault((row.benchmark, row.prompt_id), []).append(row)
    pairs: list[RewardPair] = []
    for (benchmark, prompt_id), group in sorted(groups.items()):
        rng = random.Random(f"{seed}\x1f{benchmark}\x1f{prompt_id}")
        verifiable = _unique([r for r in group if r.correct is not None])
        judged = _unique([r for r in group if r.correct is None and r.score is not None])
        candidates = _verifiable_pairs(verifiable, rng) + _judged_pairs(judged, cfg.pair_min_score_gap, rng)
        split = pair_split(benchmark, prompt_id, cfg.heldout_fraction)
        for chosen, rejected, margin in candidates[: cfg.max_pairs_per_prompt]:
            pairs.append(
                RewardPair(
                    benchmark, prompt_id, chosen.prompt, chosen.response, rejected.response, margin, split
                )
            )
    return pairs


def _unique(rows: list[LabelledResponse]) -> list[LabelledResponse]:
    """The rows with distinct response texts, keeping the first of each, ordered by text for determinism."""
    seen: dict[str, LabelledResponse] = {}
    for row in rows:
        seen.setdefault(row.response, row)
    return [seen[text] for text in sorted(seen)]


Candidate = tuple[LabelledResponse, LabelledResponse, float]


def _verifiable_pairs(rows: list[LabelledResponse], rng: random.Random) -> list[Candidate]:
    good = [r for r in rows if r.correct]
    bad = [r for r in rows if r.correct is False]
    candidates = [(g, b, _vote_margin(g, b)) for g in good for b in bad]
    rng.shuffle(candidates)
    return candidates


def _vote_margin(good: LabelledResponse, bad: LabelledResponse) -> float:
    shares = [s for s in (good.vote_share, bad.vote_share) if s is not None]
    return float(max(shares)) if shares else 1.0


def _judged_pairs(rows: list[LabelledResponse], min_gap: float, rng: random.Random) -> list[Candidate]:
    candidates: list[Candidate] = []
    for i, first in enumerate(rows):
        for second in rows[i + 1 :]:
            assert first.score is not None and second.score is not None
            gap = abs(first.score - second.score)
            if gap < min_gap or gap == 0:
                continue
            high, low = (first, second) if first.score > second.score else (second, first)
            candidates.append((high, low, min(1.0, gap / JUDGE_SCALE)))
    rng.shuffle(candidates)
    candidates.sort(key=lambda c: -c[2])  # stable: equal gaps keep the seeded order
    return candidates
