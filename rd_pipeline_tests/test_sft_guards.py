"""SFT that cannot silently make the student worse: validation on held-out prompts with checkpoint selection (the
base student is step 0), the sft_improves and sft_not_worse checks, and the curve in the report.

Real TRL training on the tiny random model: a first SFT teaches it one answer, a second one contradicts it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rd_pipeline.benchmarks import BenchmarkItem
from rd_pipeline.benchmarks.base import item_to_json
from rd_pipeline.config import PipelineConfig, SftConfig, load_preset
from rd_pipeline.evaluation.metrics import training_phase
from rd_pipeline.evaluation.report import render_report
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.validation import held_out_of_sft, split_prompts, validation_split
from rd_pipeline.training import train_sft


def _question(i: int) -> list[dict]:
    return [{"role": "user", "content": f"What is {i} times 3 plus 7?"}]


def _examples(answer: int, n: int = 8) -> list[dict]:
    return [
        {"prompt": _question(i), "completion": [{"role": "assistant", "content": f"The answer is {answer}."}]}
        for i in range(n)
    ]


def _validation(vote: str, n: int = 4) -> list[dict]:
    """Held-out prompts whose majority answer is ``vote`` (gold is the true sum: a monitor only)."""
    return [
        {
            "prompt": _question(i),
            "benchmark": "gsm8k",
            "prompt_id": f"v{i}",
            "vote_answer": vote,
            "item": item_to_json(
                BenchmarkItem("gsm8k", f"v{i}", "train", f"{i} times 3 plus 7", gold=str(3 * i + 7))
            ),
        }
        for i in range(20, 20 + n)
    ]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def answers_42(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny random model fine-tuned to answer 42, validated on prompts whose vote label is 42."""
    base = resolve_model("tiny-random", tmp_path_factory.mktemp("rd_home")).location
    out = tmp_path_factory.mktemp("sft") / "answers_42"
    cfg = SftConfig(
        max_steps=20,
        batch_size=4,
        learning_rate=1e-2,
        max_length=64,
        eval_every_steps=5,
        patience=0,
        validation_max_new_tokens=8,
    )
    metrics = train_sft(base, _examples(42), cfg, out, validation=_validation("42"))
    return out, metrics


def test_sft_that_helps_ships_its_first_best_step(answers_42: tuple[Path, dict]) -> None:
    _, metrics = answers_42
    validation = metrics["validation"]
    curve = validation["curve"]
    assert [point["step"] for point in curve] == [0, 5, 10, 15, 20]
    assert curve[0]["agreement"] == 0.0 and curve[0]["kl"] is None  # the random base answers nothing
    best = max(point["agreement"] for point in curve)
    assert best == 1.0
    assert validation["selected_step"] == min(p["step"] for p in curve if p["agreement"] == best)
    assert validation["selection_metric"] == "agreement"
    assert curve[0]["benchmarks"]["gsm8k"]["gold_n"] == 4  # gold measured as a monitor


def test_sft_that_hurts_ships_the_base_student(answers_42: tuple[Path, dict], tmp_path: Path) -> None:
    """Fine-tuning the 42-answering model to answer 7 makes it disagree with the vote labels (42): the base
    (step 0) stays the best, and its weights are what ships."""
    base, _ = answers_42
    cfg = SftConfig(
        max_steps=12,
        batch_size=4,
        learning_rate=1e-2,
        max_length=64,
        eval_every_steps=4,
        patience=0,
        validation_max_new_tokens=8,
    )
    out = tmp_path / "answers_7"
    metrics = train_sft(str(base), _examples(7), cfg, out, validation=_validation("42"))

    curve = metrics["validation"]["curve"]
    assert curve[0]["step"] == 0 and curve[0]["agreement"] == 1.0
    assert curve[-1]["agreement"] < 1.0  # SFT made it worse
    assert metrics["validation"]["selected_step"] == 0 and metrics["steps"] == 12
    before, shipped = _weights(base), _weights(out)
    assert all(torch.equal(before[key], shipped[key]) for key in before)


def test_rl_validates_on_prompts_sft_neither_trained_nor_selected_on(tmp_path: Path) -> None:
    """RL validates on prompts SFT did not train on (on prompts SFT learnt by heart, RL could never beat its step
    0) and that SFT's checkpoint selection did not look at (there the shipped SFT student's agreement is biased
    upwards by being the best of several checkpoints). The split is stable."""
    config = load_preset("tiny")
    config = config.model_copy(
        update={
            "benchmarks": [config.benchmarks[0].model_copy(update={"train_size": 24, "eval_size": 2})],
            "sft": config.sft.model_copy(update={"validation_fraction": 0.3, "max_validation_prompts": 8}),
            "rl": config.rl.model_copy(update={"validation_fraction": 0.3, "max_validation_prompts": 4}),
            "paths": config.paths.model_copy(update={"rd_home": str(tmp_path / "rd")}),
        }
    )
    ctx = StepContext(config)
    make_benchmark_prompts(ctx, "gsm8k")
    ids = {
        stage: [[r["prompt_id"] for r in part] for part in split_prompts(ctx, stage)]
        for stage in ("sft", "rl")
    }
    (sft_train, sft_validation), (rl_train, rl_validation) = ids["sft"], ids["rl"]
    assert 1 <= len(rl_validation) <= 4 and 1 <= len(sft_validation) <= 8
    assert not set(rl_validation) & set(sft_validation)
    assert not set(rl_validation) & set(rl_train) and set(sft_validation) <= set(rl_train)
    assert split_prompts(ctx, "rl")[1] == split_prompts(ctx, "rl")[1]
    # SFT trains on neither its own validation prompts nor RL's.
    assert held_out_of_sft(ctx) == {"gsm8k": set(sft_validation) | set(rl_validation)}
    assert set(rl_validation) <= set(sft_train)  # split_prompts' training side; the examples leave them out
    ids_all = [f"p{i}" for i in range(400)]
    held = {i for i in ids_all if validation_split("gsm8k", i, 0.2) == "validation"}
    assert 40 < len(held) < 120
    assert held < {i for i in ids_all if validation_split("gsm8k", i, 0.3) == "validation"}
    after = {i for i in ids_all if validation_split("gsm8k", i, 0.3, start=0.2) == "validation"}
    assert after and not held & after


def test_validation_shares_that_hold_out_every_prompt_are_refused() -> None:
    config = load_preset("tiny")
    with pytest.raises(ValueError, match="sft.validation_fraction \\+ rl.validation_fraction = 1"):
        PipelineConfig.model_validate(
            {
                **config.model_dump(),
                "sft": {**config.sft.model_dump(), "validation_fraction": 0.6},
                "rl": {**config.rl.model_dump(), "validation_fraction": 0.4},
            }
        )


def _sft_checks(result: TrainedModel) -> dict[str, tuple[bool, bool, dict]]:
    outcomes = evaluate_checks("sft_student", result, load_preset("tiny"))
    return {o.name: (o.passed, o.blocking, o.details) for o in outcomes}


def _sft_result(base: float, shipped: float, n: int, selected: int) -> TrainedModel:
    curve = [
        {"step": 0, "agreement": base, "agreement_n": n},
        {"step": 5, "agreement": shipped, "agreement_n": n},
        {"step": 10, "agreement": 0.1, "agreement_n": n},
    ]
    return TrainedModel(metrics={"validation": {"curve": curve, "selected_step": selected}, "steps": 10})


@pytest.mark.parametrize(
    ("base", "shipped", "n", "selected", "improves", "not_worse"),
    [
        (0.50, 0.70, 100, 5, True, True),  # pass: above the base student
        (0.50, 0.50, 100, 0, False, True),  # warn: the base student itself shipped
        (0.50, 0.45, 100, 5, False, True),  # warn: lower, within the interval of the difference
        (0.50, 0.30, 100, 5, False, False),  # fail: lower beyond it
        (0.50, 0.30, 10, 5, False, True),  # the same drop on 10 prompts is within the interval: warn
    ],
)
def test_sft_checks_pass_warn_and_fail(
    base: float, shipped: float, n: int, selected: int, improves: bool, not_worse: bool
) -> None:
    checks = _sft_checks(_sft_result(base, shipped, n, selected))
    assert checks["sft_improves"][:2] == (improves, False)  # a warning only
    assert checks["sft_not_worse"][:2] == (not_worse, True)  # blocks the commit
    details = checks["sft_not_worse"][2]
    assert (details["agreement_base"], details["agreement_shipped"]) == (base, shipped)
    assert "reward_base" not in details  # SFT measures no reward
    assert details["difference_ci_low"] <= details["difference"] <= details["difference_ci_high"]


def test_sft_checks_pass_with_a_note_without_validation() -> None:
    checks = _sft_checks(TrainedModel(metrics={"validation": {"curve": [], "selected_step": None}}))
    for name in ("sft_improves", "sft_not_worse"):
        passed, _, details = checks[name]
        assert passed and "no validation agreement" in details["note"]


def test_metadata_shows_where_in_training_the_selected_step_falls() -> None:
    metadata = _sft_result(0.5, 0.7, 100, 5).to_metadata()
    assert (metadata["selected_step"], metadata["selected_phase"]) == (5, "middle")
    assert [training_phase(step, 6) for step in (0, 1, 2, 3, 4, 5, 6)] == [
        "start",
        "early",
        "early",
        "middle",
        "middle",
        "late",
        "late",
    ]
    assert training_phase(None, 6) is None and training_phase(3, None) is None


def _curve_rows(selected: int) -> list[dict]:
    return [
        {
            "benchmark": b,
            "step": s,
            "agreement": a if b == "gsm8k" else None,
            "agreement_n": 8 if b == "gsm8k" else 0,
            "gold_accuracy": a,
            "gold_n": 8,
            "mean_reward": None,
            "mean_length": 10.0,
            "kl": None,
            "prompts": 8,
            "selected": s == selected,
        }
        for b in ("gsm8k", "alpaca_eval")
        for s, a in ((0, 0.5), (2, 0.625), (6, 0.25))
    ]


@pytest.mark.parametrize(
    ("selected", "shipped"),
    [
        (2, "Shipped: step 2 of 6 trained, in the early third of training."),
        (0, "Shipped: the base student (step 0): SFT did not improve validation agreement."),
    ],
)
def test_report_shows_the_sft_validation_curve_and_what_shipped(
    selected: int, shipped: str, tmp_path: Path
) -> None:
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
    report = render_report(scores, tmp_path, sft_validation=_curve_rows(selected))
    assert (tmp_path / "sft_validation.png").read_bytes().startswith(b"\x89PNG")
    assert "## SFT validation" in report.markdown and shipped in report.markdown
    for benchmark in ("gsm8k", "alpaca_eval"):
        assert f"### {benchmark}" in report.markdown
    assert "No vote labels to agree with" in report.markdown.split("### alpaca_eval")[1]
    # No reward model or KL in SFT: those columns are left out.
    assert "| step | agreement (n) | gold accuracy (monitor) | mean length | shipped |" in report.markdown
    mark = "✓" if selected == 2 else ""
    assert f"| 2 | 0.625 (8) | 0.625 | 10.0 | {mark} |" in report.markdown
