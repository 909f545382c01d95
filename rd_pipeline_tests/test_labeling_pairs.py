"""Reward pairs from labelled responses."""

from __future__ import annotations

import random

import pytest

from rd_pipeline.config import LabelingConfig, RewardModelConfig, parse_config
from rd_pipeline.labeling.pairs import LabelledResponse, build_reward_pairs, pair_source_stats, pair_split
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts, read_prompts
from rd_pipeline.steps.pseudo_labels import make_pseudo_labels
from rd_pipeline.steps.reward_labels import make_reward_labels
from rd_pipeline.steps.reward_model import _training_pairs
from rd_pipeline.training import train_reward_model


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
    rows = _verifiable("p1", [True, False, True, None], share=0.6)
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=10, pair_policy="random"), seed=0)
    assert {(p.chosen, p.rejected) for p in pairs} == {("resp p1 0", "resp p1 1"), ("resp p1 2", "resp p1 1")}
    # the prompt's majority share, counted once (0.6, not 0.6 * 0.6)
    assert all(p.margin == 0.6 and p.prompt == "Q p1" and p.benchmark == "gsm8k" for p in pairs)


def test_pair_margin_none_gives_pairs_without_a_margin():
    rows = _verifiable("p1", [True, False, True], share=0.6) + _judged("q", [9, 3, 6])
    cfg = LabelingConfig(max_pairs_per_prompt=10, pair_policy="random", pair_margin="none")
    pairs = build_reward_pairs(rows, cfg, seed=0)
    assert {p.benchmark for p in pairs} == {"gsm8k", "alpaca_eval"}
    assert all(p.margin is None for p in pairs)
    assert LabelingConfig().pair_margin == "vote_share"


def test_all_correct_gives_no_pairs_and_duplicates_are_dropped():
    assert build_reward_pairs(_verifiable("p", [True, True]), LabelingConfig(), seed=0) == []
    rows = _verifiable("p", [True, False]) + _verifiable("p", [True, False])
    assert len(build_reward_pairs(rows, LabelingConfig(pair_policy="random"), seed=0)) == 1


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
    pairs = build_reward_pairs(rows, LabelingConfig(heldout_fraction=0.25, pair_policy="random"), seed=0)
    heldout = {p.prompt_id for p in pairs if p.split == "heldout"}
    assert 70 <= len(heldout) <= 130
    assert all(p.split == pair_split("gsm8k", p.prompt_id, 0.25) for p in pairs)
    no_heldout = LabelingConfig(heldout_fraction=0.0, pair_policy="random")
    assert all(p.split == "train" for p in build_reward_pairs(rows, no_heldout, 0))


def _sourced(prompt_id: str, rows: list[tuple[str, bool]], share: float | None) -> list[LabelledResponse]:
    return [
        LabelledResponse("gsm8k", prompt_id, f"Q {prompt_id}", f"{source} {prompt_id} {i}", source,  # type: ignore[arg-type]
                         correct=flag, vote_share=share)
        for i, (source, flag) in enumerate(rows)
    ]  # fmt: skip


def test_margin_grows_with_label_confidence_and_missing_confidence_is_smallest():
    """Over many random pairs: a less certain pair never gets a larger margin, whatever its sources."""
    rng = random.Random(7)
    observed: list[tuple[float | None, float | None, float]] = []
    for index in range(300):
        shares = [rng.choice([None, 0.3, 0.5, 0.6, 0.75, 0.9, 1.0]) for _ in range(4)]
        rows = [
            LabelledResponse("gsm8k", f"p{index}", "Q", f"r{i}", rng.choice(["teacher", "student"]),
                             correct=i % 2 == 0, vote_share=share)
            for i, share in enumerate(shares)
        ]  # fmt: skip
        by_text = {r.response: r for r in rows}
        for pair in build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=10), seed=index):
            assert 0.0 <= pair.margin <= 1.0
            observed.append((by_text[pair.chosen].vote_share, by_text[pair.rejected].vote_share, pair.margin))
    assert len(observed) > 500
    smallest = min(m for _, _, m in observed)
    for chosen_share, rejected_share, margin in observed:
        if chosen_share is None or rejected_share is None:
            assert margin == smallest
    known = [(c, r, m) for c, r, m in observed if c is not None and r is not None]
    for c1, r1, m1 in known:
        for c2, r2, m2 in known:
            if c1 <= c2 and r1 <= r2:
                assert m1 <= m2 + 1e-12


def test_student_pairs_do_not_get_the_largest_margin():
    rows = _sourced("p", [("teacher", True), ("teacher", False), ("student", True), ("student", False)], 0.6)
    rows += [
        LabelledResponse("gsm8k", "p", "Q p", f"s{i}", "student", correct=i == 0, vote_share=None)
        for i in range(2)
    ]
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=20, pair_policy="random"), seed=0)
    unknown = [p.margin for p in pairs if p.chosen == "s0" or p.rejected == "s1"]
    known = [p.margin for p in pairs if p.chosen != "s0" and p.rejected != "s1"]
    assert unknown and known and max(unknown) < min(known)


def _confounded_population(prompts: int) -> list[LabelledResponse]:
    """A strong teacher (3 of 4 correct) and a weak student (1 of 4 correct) on every prompt."""
    rows: list[LabelledResponse] = []
    for i in range(prompts):
        flags = (
            [("teacher", True)] * 3 + [("teacher", False)] + [("student", True)] + [("student", False)] * 3
        )
        rows += _sourced(f"p{i}", flags, 0.75)
    return rows


def test_balanced_pairs_do_not_tie_the_label_to_the_source():
    rows = _confounded_population(200)
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=4), seed=0)
    stats = pair_source_stats(pairs)
    assert LabelingConfig().pair_policy == "balanced"
    assert stats.pairs == len(pairs) == 800
    assert stats.chosen_teacher_share == 0.5
    assert stats.rejected_teacher_share == 0.5
    assert stats.same_source_pairs > 0
    cross = [p for p in pairs if p.chosen_source != p.rejected_source]
    assert sum(p.chosen_source == "teacher" for p in cross) == sum(
        p.chosen_source == "student" for p in cross
    )


def test_random_pairs_keep_the_confound_when_asked_for():
    rows = _confounded_population(200)
    cfg = LabelingConfig(max_pairs_per_prompt=4, pair_policy="random")
    stats = pair_source_stats(build_reward_pairs(rows, cfg, seed=0))
    assert stats.chosen_teacher_share > 0.65


def test_balanced_judged_pairs_alternate_sources():
    rows = [LabelledResponse("alpaca_eval", "q", "I", f"t{s}", "teacher", score=s) for s in (10, 9, 8)] + [
        LabelledResponse("alpaca_eval", "q", "I", f"s{s}", "student", score=s) for s in (7, 3, 2)
    ]
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=4, pair_min_score_gap=1), seed=0)
    assert len(pairs) == 4
    assert pair_source_stats(pairs).chosen_teacher_share == 0.5
    chosen_rejected = [(p.chosen, p.rejected) for p in pairs]
    assert chosen_rejected[:2] == [("t10", "t8"), ("s7", "s2")]  # largest gaps first within each source
    assert chosen_rejected[3] == ("s7", "s3")


def _responses(prompts: list[dict], answers: list[str], version_column: str) -> list[dict]:
    return [
        {"benchmark": "gsm8k", "prompt_id": p["prompt_id"], "temperature": 1.0, "sample_index": i,
         "response": f"{version_column} {i}. The answer is {answer.format(gold=p['gold'])}.", "input_tokens": 1,
         "output_tokens": 1, version_column: "v1"}
        for p in prompts
        for i, answer in enumerate(answers)
    ]  # fmt: skip


@pytest.mark.parametrize("pair_margin", ["vote_share", "none"])
def test_reward_labels_step_gives_student_pairs_the_prompt_confidence(tmp_path, pair_margin):
    """Through the real step and store: student pairs get the prompt's vote-share margin, not the largest; with
    pair_margin none no pair has a margin, and the reward model trains without one (plain Bradley-Terry)."""
    config = parse_config(
        {
            "teacher": {"ref": "tiny-random"},
            "student": {"ref": "tiny-random"},
            "benchmarks": [{"name": "gsm8k", "train_size": 6, "eval_size": 2}],
            "labeling": {"max_pairs_per_prompt": 8, "pair_margin": pair_margin},
            "paths": {"rd_home": str(tmp_path)},
        }
    )
    ctx = StepContext(config)
    make_benchmark_prompts(ctx, "gsm8k")
    prompts = read_prompts(ctx, "gsm8k", "train")
    ctx.store.replace_partition(
        "teacher_responses",
        "gsm8k",
        _responses(prompts, ["{gold}", "{gold}", "{gold}", "-1"], "teacher_version"),
    )
    ctx.record_version("teacher_responses", "gsm8k", "t1", "teacher-v1")
    make_pseudo_labels(ctx, "gsm8k")
    ctx.store.replace_partition(
        "student_responses", "gsm8k", _responses(prompts, ["{gold}", "-2", "-3", "-4"], "student_version")
    )
    ctx.record_version("student_responses", "gsm8k", "s1", "teacher-v1")
    result = make_reward_labels(ctx, "gsm8k")
    pairs = ctx.store.read("reward_pairs", "gsm8k")
    student_pairs = [p for p in pairs if p["chosen"].startswith("student") and "student" in p["rejected"]]
    assert pairs and student_pairs
    assert result.metadata["pairs"] == len(pairs)
    assert result.metadata["chosen_teacher_share"] == 0.5
    assert result.metadata["same_source_pairs"] > 0
    if pair_margin == "vote_share":
        assert {p["margin"] for p in pairs} == {0.75}  # 3 of 4 teacher samples agree
        return
    assert {p["margin"] for p in pairs} == {None}
    train_pairs, _ = _training_pairs(ctx)
    base = resolve_model("tiny-random", tmp_path).location
    cfg = RewardModelConfig(max_steps=1, batch_size=2, max_length=256)
    metrics = train_reward_model(base, train_pairs, [], cfg, tmp_path / "rm")
    assert metrics["margin_used"] is False


def test_a_text_both_sources_wrote_pairs_with_either_source():
    """Short canonical answers are often written by teacher and student alike; such a text carries no source,
    so balancing keeps its pairs instead of dropping them as teacher-over-student."""
    rows = _sourced("p", [("teacher", True), ("teacher", False)], 0.75) + [
        LabelledResponse("gsm8k", "p", "Q p", "teacher p 0", "student", correct=True, vote_share=0.75),
        LabelledResponse("gsm8k", "p", "Q p", "wrong 1", "student", correct=False, vote_share=0.75),
        LabelledResponse("gsm8k", "p", "Q p", "wrong 2", "student", correct=False, vote_share=0.75),
    ]
    pairs = build_reward_pairs(rows, LabelingConfig(max_pairs_per_prompt=8), seed=0)
    assert sorted((p.chosen, p.rejected) for p in pairs) == [
        ("teacher p 0", "teacher p 1"),
        ("teacher p 0", "wrong 1"),
        ("teacher p 0", "wrong 2"),
    ]
    assert {p.chosen_source for p in pairs} == {"shared"}
    assert pair_source_stats(pairs).chosen_teacher_share == 0.0
    assert pair_source_stats(pairs).shared_text_pairs == 3
