"""RL that cannot silently get worse: reward sources, validation with checkpoint selection, rollouts on record.

Real TRL trainers on the tiny random model; the reward model is trained here for a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rd_pipeline.benchmarks import BenchmarkItem
from rd_pipeline.benchmarks.base import item_to_json
from rd_pipeline.config import RewardModelConfig, RewardSourceConfig, RlConfig, load_preset
from rd_pipeline.evaluation.report import render_report
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.training import train_reward_model, train_rl
from rd_pipeline.training.rl_rewards import Standardisation, VoteAgreementReward
from rd_pipeline.training.rl_rollouts import ROLLOUTS_FILE


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _gsm8k_item(i: int, gold: str) -> BenchmarkItem:
    return BenchmarkItem("gsm8k", f"p{i}", "train", f"What is {i} times 3 plus 7?", gold=gold)


def _records(n: int, start: int = 0, vote: str | None = "12345") -> list[dict]:
    """RL prompt records whose majority answer no random model writes (so validation agreement stays 0)."""
    return [
        {
            "prompt": _user(f"What is {i} times 3 plus 7?"),
            "benchmark": "gsm8k",
            "prompt_id": f"p{i}",
            "vote_answer": vote,
            "item": item_to_json(_gsm8k_item(i, str(3 * i + 7))),
        }
        for i in range(start, start + n)
    ]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def reward_model(tiny_base: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    pairs = [
        {
            "prompt": _user(f"What is {i} times 3 plus 7?"),
            "chosen": [{"role": "assistant", "content": f"The answer is {3 * i + 7}."}],
            "rejected": [{"role": "assistant", "content": "no idea"}],
        }
        for i in range(8)
    ]
    train_reward_model(
        tiny_base, pairs, [], RewardModelConfig(max_steps=2, batch_size=4, max_length=128), out
    )
    return str(out)


def test_vote_agreement_rewards_the_majority_answer_and_skips_unlabelled_prompts() -> None:
    item = item_to_json(_gsm8k_item(1, "10"))
    completions = [[{"role": "assistant", "content": text}] for text in ("The answer is 12.", "#### 10", "x")]
    rewards = VoteAgreementReward()(
        [_user("q")] * 3, completions, vote_answer=["12", "12", None], item=[item, item, item]
    )
    # Agreement is with the vote, not with gold (10): gold is never a reward.
    assert rewards == [1.0, 0.0, None]


def test_reward_model_scores_are_standardised_on_reference_responses() -> None:
    standard = Standardisation.of([1.0, 3.0, 5.0])
    assert (standard.mean, standard.std, standard.responses) == (3.0, 2.0, 3)
    assert standard.apply(5.0) == 1.0
    assert Standardisation.of([2.0]).std == 1.0 and Standardisation.of([2.0, 2.0]).std == 1.0


def test_rl_ships_the_sft_student_when_validation_never_improves(
    tiny_base: str, reward_model: str, tmp_path: Path
) -> None:
    """Validation agreement stays 0 (no random completion answers 12345): the starting policy (step 0) is kept,
    patience 1 stops training after the first validation, and every rollout of the steps trained is on record."""
    from transformers import TrainerCallback

    seen: dict[str, object] = {}

    class ArgsSpy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(scale_rewards=args.scale_rewards, reward_weights=list(args.reward_weights))

    cfg = RlConfig(
        max_steps=4,
        batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        eval_every_steps=1,
        patience=1,
        scale_rewards="none",
        rewards=[
            RewardSourceConfig(source="reward_model"),
            RewardSourceConfig(source="vote_agreement", weight=2),
        ],
        log_rollouts="all",
    )
    out = tmp_path / "rl"
    reference = [
        _user("What is 1 times 3 plus 7?") + [{"role": "assistant", "content": t}] for t in ("10", "a b")
    ]
    metrics = train_rl(
        tiny_base,
        reward_model,
        _records(4),
        cfg,
        out,
        callbacks=[ArgsSpy()],
        validation=_records(3, start=20),
        reference=reference,
    )

    assert seen == {"scale_rewards": "none", "reward_weights": [1.0, 2.0]}
    validation = metrics["validation"]
    assert [point["step"] for point in validation["curve"]] == [0, 1]
    assert [point["agreement"] for point in validation["curve"]] == [0.0, 0.0]
    assert validation["selected_step"] == 0 and validation["stopped_early_at"] == 1
    assert metrics["steps"] == 1
    base, shipped = _weights(Path(tiny_base)), _weights(out)
    assert all(torch.equal(base[key], shipped[key]) for key in base)
    assert metrics["reward_standardisation"]["responses"] == 2

    rows = [json.loads(line) for line in (out / ROLLOUTS_FILE).read_text().splitlines()]
    assert len(rows) == 4 and {row["step"] for row in rows} == {1}
    assert {row["prompt_id"] for row in rows} <= {"p0", "p1", "p2", "p3"}
    for row in rows:
        assert set(row["rewards"]) == {"reward_model", "vote_agreement"}
        assert row["rewards"]["vote_agreement"] == 0.0
        assert row["reward"] == pytest.approx(row["rewards"]["reward_model"])
        assert isinstance(row["advantage"], float) and 0 <= row["length"] <= 8
        assert row["truncated"] == (row["length"] >= 8)


def _reward_hacking(result: TrainedModel) -> tuple[bool, dict]:
    (outcome,) = [
        o for o in evaluate_checks("rl_student", result, load_preset("tiny")) if o.name == "reward_hacking"
    ]
    assert outcome.blocking
    return outcome.passed, outcome.details


def _rl_result(curve: list[dict], selected: int | None) -> TrainedModel:
    return TrainedModel(metrics={"validation": {"curve": curve, "selected_step": selected}})


def _point(step: int, agreement: float, reward: float, n: int = 100) -> dict:
    return {"step": step, "agreement": agreement, "agreement_n": n, "mean_reward": reward}


@pytest.mark.parametrize(
    ("shipped", "n", "passes"),
    [
        (0.60, 100, True),  # the SFT student itself shipped
        (0.55, 100, True),  # lower, but within the interval of the difference
        (0.40, 100, False),  # lower beyond it
        (0.40, 10, True),  # the same drop on 10 prompts is within the interval
    ],
)
def test_reward_hacking_check_compares_the_shipped_student_with_the_sft_student(
    shipped: float, n: int, passes: bool
) -> None:
    curve = [_point(0, 0.60, 0.1, n), _point(5, shipped, 0.5, n), _point(10, 0.30, 0.9, n)]
    passed, details = _reward_hacking(_rl_result(curve, 5))
    assert passed is passes
    # Reward up against agreement down, side by side.
    assert (details["reward_sft"], details["reward_shipped"], details["reward_last"]) == (0.1, 0.5, 0.9)
    assert (details["agreement_sft"], details["agreement_shipped"], details["agreement_last"]) == (
        0.6,
        shipped,
        0.3,
    )
    assert details["difference_ci_low"] <= details["difference"] <= details["difference_ci_high"]


def test_reward_hacking_check_passes_with_a_note_without_validation() -> None:
    passed, details = _reward_hacking(_rl_result([], None))
    assert passed and "no validation agreement" in details["note"]


def test_report_shows_each_partitions_rl_validation_curve(tmp_path: Path) -> None:
    rows = [
        {
            "benchmark": b,
            "step": s,
            "agreement": a,
            "agreement_n": 8,
            "gold_accuracy": a,
            "gold_n": 8,
            "mean_reward": r,
            "mean_length": 10.0,
            "kl": 0.01 * s,
            "prompts": 8,
            "selected": s == 2,
        }
        for b in ("gsm8k", "mmlu_pro")
        for s, a, r in ((0, 0.5, 0.1), (2, 0.625, 0.3), (4, 0.25, 0.8))
    ]
    scores = [
        {
            "benchmark": "gsm8k",
            "model_role": "teacher",
            "model_version": "t",
            "metric": "accuracy",
            "value": 0.5,
            "ci_low": 0.2,
            "ci_high": 0.8,
            "n": 8,
        }
    ]
    report = render_report(scores, tmp_path, rl_validation=rows)
    assert (tmp_path / "rl_validation.png").read_bytes().startswith(b"\x89PNG")
    assert "## RL validation" in report.markdown
    for benchmark in ("gsm8k", "mmlu_pro"):
        assert f"### {benchmark}" in report.markdown
    assert "| 2 | 0.625 (8) | 0.625 | 0.300 | 10.0 | 0.0200 | ✓ |" in report.markdown


def test_reward_reference_is_a_stable_sample_of_the_configured_size(tmp_path: Path) -> None:
    from rd_pipeline.config import parse_config
    from rd_pipeline.steps.context import StepContext
    from rd_pipeline.steps.prompts import make_benchmark_prompts
    from rd_pipeline.steps.rl_data import reference_responses

    def context(size: int) -> StepContext:
        data = load_preset("tiny").model_dump(mode="json")
        data["paths"] = {"rd_home": str(tmp_path / "rd")}
        data["benchmarks"] = [{"name": "gsm8k", "source": "builtin", "train_size": 8, "eval_size": 2}]
        data["rl"]["reward_reference_responses"] = size
        return StepContext(parse_config(data))

    ctx = context(5)
    make_benchmark_prompts(ctx, "gsm8k")
    train = [
        row["prompt_id"] for row in ctx.store.read("benchmark_prompts", "gsm8k") if row["split"] == "train"
    ]
    rows = [
        {"benchmark": "gsm8k", "prompt_id": prompt_id, "temperature": 1.0, "sample_index": index,
         "response": f"{prompt_id} answer {index}", "input_tokens": 1, "output_tokens": 3, "student_version": "v"}
        for prompt_id in train
        for index in range(2)
    ]  # fmt: skip
    ctx.store.replace_partition("student_responses", "gsm8k", rows)
    five = reference_responses(ctx)
    assert len(five) == 5 and all(c[0]["role"] == "user" and c[1]["role"] == "assistant" for c in five)
    assert reference_responses(ctx) == five
    everything = reference_responses(context(1000))
    assert len(everything) == 2 * len(train) and five == everything[:5]
