"""Reward pairs from labelled responses."""

from __future__ import annotations

from rd_pipeline.config import LabelingConfig
from rd_pipeline.labeling.pairs import LabelledResponse, build_reward_pairs, pair_split


def _verifiable(prompt_id: str, flags: list[bool | None], share: float = 0.75) -> list[LabelledResponse]:
    return [
        LabelledResponse("gsm8k", prompt_id, f"Q {prompt_id}", f"resp {prompt_id} {i}",
                         "teacher" if i % 2 == 0 else "student", correct=flag, vote_share=share)
        for i, flag in enumerate(flags)
    ]  # fmt: skip


def _judged(prompt_id: str, scores: list[float | None]) -> list[LabelledResponse]:
    return [
        LabelledResponse(
            "alpaca_eval", prompt_id, f"I {prompt_id}", f"out {prompt_id} {i}", "student", score=s
        )
        for i, s in enumerate(scores)
    ]


def test_correct_incorrect_pairs_with_vote_margin():
    rows = _verifiable("p1", [True, False, True, None])
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=10), seed=0)
    assert {(p.chosen, p.rejected) for p in pairs} == {("resp p1 0", "resp p1 1"), ("resp p1 2", "resp p1 1")}
    assert all(p.margin == 0.75 and p.prompt == "Q p1" and p.benchmark == "gsm8k" for p in pairs)


def test_all_correct_gives_no_pairs_and_duplicates_are_dropped():
    assert build_reward_pairs(_verifiable("p", [True, True]), LabelingConfig(), seed=0) == []
    rows = _verifiable("p", [True, False]) + _verifiable("p", [True, False])
    assert len(build_reward_pairs(rows, LabelingConfig(), seed=0)) == 1


def test_judged_pairs_respect_gap_and_prefer_large_gaps():
    rows = _judged("q", [9, 8, 3, None, 6])
    cfg = LabelingConfig(pair_min_score_gap=2.5, max_pairs_per_prompt=2)
    pairs = build_reward_pairs(rows, cfg, seed=0)
    assert [(p.chosen, p.rejected) for p in pairs] == [("out q 0", "out q 2"), ("out q 1", "out q 2")]
    assert [round(p.margin, 4) for p in pairs] == [round(6 / 9, 4), round(5 / 9, 4)]
    all_pairs = build_reward_pairs(rows, cfg.model_copy(update={"max_pairs_per_prompt": 10}), seed=0)
    assert len(all_pairs) == 4  # 9-3, 8-3, 9-6, 6-3 ; 9-8 and 8-6 fall under the gap


def test_cap_is_deterministic_and_seeded():
    rows = _verifiable("p", [True] * 4 + [False] * 4)
    cfg = LabelingConfig(max_pairs_per_prompt=3)
    first = build_reward_pairs(rows, cfg, seed=1)
    assert len(first) == 3
    assert first == build_reward_pairs(list(reversed(rows)), cfg, seed=1)
    seeds = {tuple((p.chosen, p.rejected) for p in build_reward_pairs(rows, cfg, seed=s)) for s in range(8)}
    assert len(seeds) > 1


def test_heldout_split_is_per_prompt_and_near_the_fraction():
    rows = [r for i in range(400) for r in _verifiable(f"p{i}", [True, False])]
    pairs = build_reward_pairs(rows, LabelingConfig(heldout_fraction=0.25), seed=0)
    heldout = {p.prompt_id for p in pairs if p.split == "heldout"}
    assert 70 <= len(heldout) <= 130
    assert all(p.split == pair_split("gsm8k", p.prompt_id, 0.25) for p in pairs)
    assert all(p.split == "train" for p in build_reward_pairs(rows, LabelingConfig(heldout_fraction=0.0), 0))
