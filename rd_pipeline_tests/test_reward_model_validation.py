"""Reward-model validation: held-out pair accuracy every few steps, the best checkpoint shipped, early stopping,
and the statistical check (Wilson lower bound) on the shipped model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_pipeline.config import RewardModelConfig, parse_config
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.training import RewardScorer, pairwise_accuracy, train_reward_model


def _pairs(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} times 3 plus 7?"}],
            "chosen": [{"role": "assistant", "content": f"{i} * 3 = {3 * i}, plus 7 is {3 * i + 7}."}],
            "rejected": [{"role": "assistant", "content": f"about {3 * i + 12}"}],
        }
        for i in range(start, start + n)
    ]


def _reversed(pairs: list[dict]) -> list[dict]:
    """The pairs with chosen and rejected swapped: what training teaches makes their accuracy fall (from 1 to
    1/6 over 10 steps at learning rate 3e-5, from the tiny model's seeded score head)."""
    return [{**pair, "chosen": pair["rejected"], "rejected": pair["chosen"]} for pair in pairs]


def _best_point(curve: list[dict]) -> dict:
    """The first point with the highest score (ties keep the earlier, less trained weights)."""
    scores = [point["score"] for point in curve]
    return curve[scores.index(max(scores))]


def test_the_shipped_reward_model_is_the_best_validated_one_not_the_last(tiny_base: str, tmp_path: Path):
    cfg = RewardModelConfig(
        max_steps=8, batch_size=4, learning_rate=3e-5, max_length=128, eval_every_steps=3, patience=0
    )
    heldout = _reversed(_pairs(6, start=40))
    metrics = train_reward_model(tiny_base, _pairs(12), heldout, cfg, tmp_path / "rm", seed=0)

    validation = metrics["validation"]
    curve = validation["curve"]
    assert [point["step"] for point in curve] == [3, 6, 8]  # every 3 steps and at the last
    assert metrics["steps"] == 8 and validation["stopped_early_at"] is None
    best = _best_point(curve)
    assert validation["selected_step"] == best["step"] != 8, curve
    assert best["score"] > curve[-1]["score"]
    # The saved checkpoint is the selected one: its held-out accuracy and mean gap are those of that point.
    assert metrics["heldout_accuracy"] == best["score"]
    assert metrics["heldout_mean_gap"] == pytest.approx(best["heldout_mean_gap"], abs=1e-5)
    with RewardScorer(str(tmp_path / "rm")) as scorer:
        assert pairwise_accuracy(scorer, heldout)["accuracy"] == best["score"]


def test_reward_model_training_stops_once_patience_runs_out(tiny_base: str, tmp_path: Path):
    cfg = RewardModelConfig(
        max_steps=40, batch_size=4, learning_rate=3e-5, max_length=128, eval_every_steps=2, patience=2
    )
    heldout = _reversed(_pairs(6, start=40))
    metrics = train_reward_model(tiny_base, _pairs(12), heldout, cfg, tmp_path / "rm", seed=0)

    validation = metrics["validation"]
    best = _best_point(validation["curve"])
    stopped = best["step"] + 2 * 2  # two evaluations, two steps apart, without improvement
    assert validation["selected_step"] == best["step"]
    assert validation["stopped_early_at"] == metrics["steps"] == stopped < 40
    assert [point["step"] for point in validation["curve"]] == list(range(2, stopped + 1, 2))
    assert metrics["heldout_accuracy"] == best["score"]
    assert metrics["heldout_mean_gap"] == pytest.approx(best["heldout_mean_gap"], abs=1e-5)


def test_without_heldout_pairs_the_last_step_ships_and_the_metrics_say_so(tiny_base: str, tmp_path: Path):
    cfg = RewardModelConfig(max_steps=2, batch_size=4, max_length=128, eval_every_steps=1, patience=1)
    metrics = train_reward_model(tiny_base, _pairs(8), [], cfg, tmp_path / "rm", seed=0)
    validation = metrics["validation"]
    assert metrics["steps"] == 2 and metrics["heldout_accuracy"] is None
    assert validation["curve"] == [] and validation["selected_step"] is None and validation["pairs"] == 0
    assert "last step" in validation["note"]


def test_validation_reaches_the_metadata_a_user_sees():
    validation = {"curve": [{"step": 2, "score": 0.5}], "selected_step": 2, "stopped_early_at": None}
    model = TrainedModel(
        path="/m", heldout_pairs=4, metrics={"heldout_accuracy": 0.5, "validation": validation}
    )
    metadata = model.to_metadata()
    assert metadata["validation_curve"] == [{"step": 2, "score": 0.5}]
    assert metadata["selected_step"] == 2 and metadata["stopped_early_at"] is None
    assert TrainedModel.from_metadata(metadata).to_metadata() == metadata


def _heldout_check(accuracy: float | None, pairs: int, **checks: object):
    config = parse_config(
        {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}, "checks": checks}
    )
    result = TrainedModel(path="/m", heldout_pairs=pairs, metrics={"heldout_accuracy": accuracy})
    return next(o for o in evaluate_checks("reward_model", result, config) if o.name == "heldout_accuracy")


@pytest.mark.parametrize(
    ("accuracy", "pairs", "passed"),
    [
        (0.60, 100, True),  # Wilson lower bound 0.502
        (0.58, 100, False),  # 0.482: above 0.5, but not surely
        (0.90, 10, True),  # 0.596
        (0.80, 5, False),  # 0.376: 4 of 5 is no evidence
        (1.00, 5, True),  # 0.566
        (0.75, 20, True),  # 0.531
        (0.70, 20, False),  # 0.481
        (None, 0, False),
    ],
)
def test_reward_model_check_needs_the_wilson_lower_bound_above_chance(accuracy, pairs, passed):
    outcome = _heldout_check(accuracy, pairs)
    assert outcome.passed is passed and outcome.blocking and outcome.refuses_commit is (not passed)
    details = outcome.details
    assert details["heldout_accuracy"] == accuracy and details["heldout_pairs"] == pairs
    assert details["lower_bound_must_exceed"] == 0.5
    assert (details["wilson_lower_95"] is None) is (accuracy is None)


def test_reward_model_check_threshold_is_configurable_and_only_warns_unenforced():
    assert _heldout_check(0.75, 20, min_reward_model_accuracy=0.53).passed is True
    assert _heldout_check(0.75, 20, min_reward_model_accuracy=0.54).passed is False
    lenient = _heldout_check(0.58, 100, enforce=False)
    assert not lenient.passed and not lenient.refuses_commit
    assert _heldout_check(0.58, 100).details["wilson_lower_95"] == pytest.approx(0.4821, abs=1e-4)
