"""Reward-model pairs (chosen, rejected) from labelled teacher and student responses."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from rd_pipeline.config import LabelingConfig

JUDGE_SCALE = 9.0  # the width of the 1-10 judge scale; score gaps are divided by it to give margins
# "shared": a response text that teacher and student both wrote; it tells nothing about who wrote it.
Source = Literal["teacher", "student", "shared"]


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
    source: Source
    correct: bool | None = None
    score: float | None = None
    vote_share: float | None = None


@dataclass(frozen=True)
class RewardPair:
    """A preference pair for one prompt; ``margin`` in [0, 1] says how sure the preference is (None: the pairs
    have no margin, ``labeling.pair_margin: none``)."""

    benchmark: str
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    margin: float | None
    split: Literal["train", "heldout"]
    chosen_source: Source = "teacher"
    rejected_source: Source = "teacher"


@dataclass(frozen=True)
class PairSourceStats:
    """Who wrote the chosen and rejected responses of a set of pairs."""

    pairs: int
    chosen_teacher_share: float | None
    rejected_teacher_share: float | None
    same_source_pairs: int
    shared_text_pairs: int = 0  # pairs with a side both teacher and student wrote


def pair_source_stats(pairs: Sequence[RewardPair]) -> PairSourceStats:
    """Shares of pairs whose chosen (rejected) response is the teacher's; same-source and shared-text counts."""
    if not pairs:
        return PairSourceStats(0, None, None, 0)
    return PairSourceStats(
        pairs=len(pairs),
        chosen_teacher_share=sum(p.chosen_source == "teacher" for p in pairs) / len(pairs),
        rejected_teacher_share=sum(p.rejected_source == "teacher" for p in pairs) / len(pairs),
        same_source_pairs=sum(p.chosen_source == p.rejected_source for p in pairs),
        shared_text_pairs=sum("shared" in (p.chosen_source, p.rejected_source) for p in pairs),
    )


def pair_split(benchmark: str, prompt_id: str, heldout_fraction: float) -> Literal["train", "heldout"]:
    """``"heldout"`` for a stable ``heldout_fraction`` share of prompts, else ``"train"``."""
    digest = hashlib.sha256(f"{benchmark}\x1fpairs\x1f{prompt_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction else "train"


def build_reward_pairs(rows: Iterable[LabelledResponse], cfg: LabelingConfig, seed: int) -> list[RewardPair]:
    """Pairs per prompt, at most ``cfg.max_pairs_per_prompt`` each, in a deterministic order.

    A prompt whose responses carry ``correct`` gives (correct, incorrect) pairs; the margin is the prompt's
    majority vote share (see ``vote_margin``). A prompt whose responses carry ``score`` gives pairs whose
    score gap is at least ``cfg.pair_min_score_gap``, margin = gap / 9, largest gaps first. With
    ``cfg.pair_margin`` "none" every margin is None. Responses with neither label are skipped, as are
    duplicate response texts. ``cfg.pair_policy`` picks among the candidate pairs (see
    ``select_pairs``). Each prompt's pairs are all ``"train"`` or all ``"heldout"``, by a stable hash of the
    prompt id. ``seed`` picks which pairs survive the cap.
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
        selected = select_pairs(candidates, cfg.pair_policy, cfg.max_pairs_per_prompt)
        for chosen, rejected, margin in selected:
            pairs.append(
                RewardPair(
                    benchmark,
                    prompt_id,
                    chosen.prompt,
                    chosen.response,
                    rejected.response,
                    margin if cfg.pair_margin == "vote_share" else None,
                    split,
                    chosen.source,
                    rejected.source,
                )
            )
    return pairs


def _unique(rows: list[LabelledResponse]) -> list[LabelledResponse]:
    """The rows with distinct response texts, keeping the first of each, ordered by text for determinism; a
    text that more than one source wrote has source ``"shared"``."""
    seen: dict[str, LabelledResponse] = {}
    for row in rows:
        first = seen.setdefault(row.response, row)
        if first.source != row.source:
            seen[row.response] = replace(first, source="shared")
    return [seen[text] for text in sorted(seen)]


Candidate = tuple[LabelledResponse, LabelledResponse, float]


def _verifiable_pairs(rows: list[LabelledResponse], rng: random.Random) -> list[Candidate]:
    good = [r for r in rows if r.correct]
    bad = [r for r in rows if r.correct is False]
    candidates = [(g, b, vote_margin(g, b)) for g in good for b in bad]
    rng.shuffle(candidates)
    return candidates


def vote_margin(good: LabelledResponse, bad: LabelledResponse) -> float:
    """How sure a (correct, incorrect) preference is: the chance the prompt's majority answer is right, taken
    to be its vote share (the good response's; both are labelled against the same majority, so the share
    counts once). 0 when either share is unknown, so a pair of uncertain labels never demands more
    separation than a pair of confident ones."""
    if good.vote_share is None or bad.vote_share is None:
        return 0.0
    return float(good.vote_share)


def select_pairs(candidates: list[Candidate], policy: str, cap: int) -> list[Candidate]:
    """Up to ``cap`` of the candidates (in their priority order) under the pairing policy.

    ``"random"`` keeps the first ``cap``. ``"balanced"`` keeps teacher-over-student pairs only as many as
    student-over-teacher pairs, so that across sources a response's source never predicts whether it is
    chosen, and fills in with same-source pairs and pairs with a text both sources wrote; picks alternate
    between chosen-teacher, chosen-student and shared-text pairs, and within the first two between
    cross-source and same-source ones.
    """
    if policy == "random":
        return candidates[:cap]
    if policy != "balanced":
        raise ValueError(f"labeling.pair_policy must be 'balanced' or 'random', got {policy!r}")
    buckets: dict[tuple[str, str], list[Candidate]] = {
        (c, r): [] for c in ("teacher", "student") for r in ("teacher", "student")
    }
    shared: list[Candidate] = []
    for candidate in candidates:
        key = (candidate[0].source, candidate[1].source)
        (shared if "shared" in key else buckets[key]).append(candidate)
    matched = min(len(buckets[("teacher", "student")]), len(buckets[("student", "teacher")]))
    sides = [
        _interleave(buckets[("teacher", "student")][:matched], buckets[("teacher", "teacher")]),
        _interleave(buckets[("student", "teacher")][:matched], buckets[("student", "student")]),
    ]
    return _interleave(*sides, shared)[:cap]


def _interleave(*queues: list[Candidate]) -> list[Candidate]:
    """One from each queue in turn, skipping emptied queues, until all are empty."""
    out: list[Candidate] = []
    for position in range(max((len(q) for q in queues), default=0)):
        out.extend(q[position] for q in queues if position < len(q))
    return out


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
