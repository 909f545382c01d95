"""SFT validation on open-ended prompts: the judge's preference of the student's greedy answer over the base
student's (step 0, 0.5 by construction), asked in both orders, selects the checkpoint that ships.

The judge is a real local OpenAI-compatible server (``fault_server``) whose verdict probabilities prefer the
shorter response (a tie for equal lengths); the student is the tiny random model, trained with real TRL.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rd_pipeline.benchmarks import BenchmarkItem
from rd_pipeline.benchmarks.base import item_to_json
from rd_pipeline.config import SftConfig, load_preset, parse_config
from rd_pipeline.evaluation.report import render_report
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.pseudo_labels import make_pseudo_labels
from rd_pipeline.steps.results import TrainedModel
from rd_pipeline.steps.sft_student import make_sft_student
from rd_pipeline.steps.teacher import make_teacher_responses
from rd_pipeline.training import train_sft
from rd_pipeline.training.base_comparison import JudgeSettings, pairwise_judge
from rd_pipeline_tests.support.fault_server import FaultServer, FaultSettings

JUDGE_MODEL = "shorter-is-better"
SURE, NEVER = 0.0, -50.0  # log-probabilities


def _fenced(user: str, label: str) -> str:
    match = re.search(rf"<<<{label} [0-9a-f]{{8}}>>>\n(.*?)\n<<<END {label} [0-9a-f]{{8}}>>>", user, re.S)
    assert match, f"no {label} in the judge's prompt"
    return match.group(1)


def _shorter_is_better(body: dict) -> list[tuple[str, dict[str, float]]] | None:
    """The judge's verdict probabilities: certain that the shorter response is better (a tie at equal length);
    a rating of 8 for any response it rates alone."""
    last = body["messages"][-1]
    if last["role"] != "assistant" or not last["content"].endswith("[["):
        return None
    if last["content"].startswith("Rating"):
        return [("8", {"8": SURE}), ("]]", {"]]": SURE})]
    user = body["messages"][1]["content"]
    first, second = len(_fenced(user, "RESPONSE A")), len(_fenced(user, "RESPONSE B"))
    verdict = "A" if first < second else "B" if second < first else "C"
    return [(verdict, {v: SURE if v == verdict else NEVER for v in "ABC"}), ("]]", {"]]": SURE})]


def _judged_pairs(server: FaultServer) -> list[tuple[str, str]]:
    """(response A, response B) of every pairwise verdict the server was asked for."""
    pairs = []
    for body in server.state.bodies:
        if body.get("logprobs") and body["messages"][-1]["content"] == "Verdict: [[":
            user = body["messages"][1]["content"]
            pairs.append((_fenced(user, "RESPONSE A"), _fenced(user, "RESPONSE B")))
    return pairs


def _api_judge(server: FaultServer) -> dict:
    return {
        "ref": JUDGE_MODEL,
        "backend": "openai",
        "api": {"base_url": server.base_url, "model": JUDGE_MODEL, "api_key_env": None, "max_retries": 2},
    }


@pytest.fixture(scope="module")
def judge_server():
    with FaultServer(FaultSettings(model=JUDGE_MODEL, logprob_script=_shorter_is_better)) as server:
        yield server


def _instruction(i: int) -> str:
    return f"Write a short greeting for friend number {i}."


def _examples(answer: str, n: int = 8) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": _instruction(i)}],
            "completion": [{"role": "assistant", "content": answer}],
        }
        for i in range(n)
    ]


def _validation(n: int = 4) -> list[dict]:
    """Held-out open-ended prompts: no vote label, no gold."""
    return [
        {
            "prompt": [{"role": "user", "content": _instruction(i)}],
            "benchmark": "alpaca_eval",
            "prompt_id": f"v{i}",
            "vote_answer": None,
            "item": item_to_json(BenchmarkItem("alpaca_eval", f"v{i}", "train", _instruction(i))),
        }
        for i in range(20, 20 + n)
    ]


def _cfg(steps: int, every: int) -> SftConfig:
    return SftConfig(
        max_steps=steps,
        batch_size=4,
        learning_rate=1e-2,
        max_length=64,
        eval_every_steps=every,
        patience=0,
        validation_max_new_tokens=12,
    )


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def answers_hi(
    tmp_path_factory: pytest.TempPathFactory, judge_server: FaultServer
) -> tuple[Path, dict, list]:
    """The tiny random model fine-tuned to answer "Hi!", validated by the judge against its random base."""
    rd_home = tmp_path_factory.mktemp("rd_home")
    base = resolve_model("tiny-random", rd_home).location
    out = tmp_path_factory.mktemp("sft") / "answers_hi"
    judge = pairwise_judge(JudgeSettings(_api_judge(judge_server), str(rd_home), 16))
    asked_before = len(_judged_pairs(judge_server))
    metrics = train_sft(base, _examples("Hi!"), _cfg(20, 5), out, validation=_validation(), judge=judge)
    return out, metrics, _judged_pairs(judge_server)[asked_before:]


def test_the_judge_prefers_the_short_answers_sft_teaches(answers_hi: tuple[Path, dict, list]) -> None:
    _, metrics, pairs = answers_hi
    validation = metrics["validation"]
    curve = validation["curve"]
    assert validation["selection_metric"] == "win_rate"
    assert [point["step"] for point in curve] == [0, 5, 10, 15, 20]
    # The base student against itself: 0.5 by construction, for every prompt.
    assert curve[0]["win_rate"] == 0.5 and curve[0]["win_n"] == 4
    assert curve[0]["benchmarks"]["alpaca_eval"]["win_rate"] == 0.5
    assert curve[0]["agreement"] is None and curve[0]["agreement_n"] == 0
    best = max(point["win_rate"] for point in curve)
    assert best == pytest.approx(1.0)
    assert validation["selected_step"] == min(p["step"] for p in curve if p["win_rate"] == best) > 0
    # Every comparison was asked in both orders, and never of the base student with itself.
    assert pairs and all((b, a) in pairs for a, b in pairs)
    assert all(a != b for a, b in pairs)


def test_sft_the_judge_dislikes_ships_the_base_student(
    answers_hi: tuple[Path, dict, list], judge_server: FaultServer, tmp_path: Path
) -> None:
    """Fine-tuning the "Hi!" model to answer at length makes the judge prefer its base (step 0): the base ships."""
    base, _, _ = answers_hi
    long_answer = "Hello there, my dear friend, I hope that this day finds you very well indeed."
    judge = pairwise_judge(JudgeSettings(_api_judge(judge_server), str(tmp_path / "rd"), 16))
    out = tmp_path / "answers_long"
    metrics = train_sft(
        str(base), _examples(long_answer), _cfg(12, 4), out, validation=_validation(), judge=judge
    )
    curve = metrics["validation"]["curve"]
    assert curve[0]["win_rate"] == 0.5 and curve[-1]["win_rate"] < 0.5
    assert metrics["validation"]["selected_step"] == 0
    before, shipped = _weights(base), _weights(out)
    assert all(torch.equal(before[key], shipped[key]) for key in before)


def test_the_validation_judge_is_closed_after_each_validation(tmp_path: Path, monkeypatch) -> None:
    """Each call builds the judge and frees its model after judging: it is not resident during training."""
    from rd_pipeline import generation

    built = []
    make_generator = generation.make_generator
    monkeypatch.setattr(
        generation, "make_generator", lambda *a, **k: built.append(make_generator(*a, **k)) or built[-1]
    )
    resolve_model("tiny-random", tmp_path)
    judge = pairwise_judge(JudgeSettings({"ref": "tiny-random"}, str(tmp_path), 4))
    for _ in range(2):
        preferences = judge([("k", "Say hi.", "Hi!", "Hello there.")])
        assert len(preferences) == 1 and preferences[0] is not None
    assert len(built) == 2 and all(generator._model is None for generator in built)
    assert [generator.loads for generator in built] == [1, 0]  # the second call's comparisons were journaled


def _open_ended_config(rd_home: Path, server: FaultServer):
    preset = load_preset("tiny").model_dump(mode="json")
    preset["benchmarks"] = [
        {"name": "alpaca_eval", "source": "builtin", "train_size": 8, "eval_size": 2},
    ]
    preset["sft"] |= {"validation_fraction": 0.5, "max_validation_prompts": 3, "max_steps": 2}
    preset["judge"] = _api_judge(server)
    preset["paths"] = {**preset.get("paths", {}), "rd_home": str(rd_home)}
    return parse_config(preset)


@pytest.mark.slow
def test_sft_student_judges_open_ended_validation_in_its_training_job(
    judge_server: FaultServer, tmp_path: Path
) -> None:
    """sft_student's training job (its own process under accelerate launch) builds the configured judge and
    fills sft_validation with win rates against the base student; a re-run of the same job asks the judge
    nothing new (its requests are journaled)."""
    config = _open_ended_config(tmp_path / "rd", judge_server)
    ctx = StepContext(config)
    for make in (make_benchmark_prompts, make_teacher_responses, make_pseudo_labels):
        make(ctx, "alpaca_eval")
    asked_before = len(_judged_pairs(judge_server))
    result = make_sft_student(ctx)
    asked = _judged_pairs(judge_server)[asked_before:]

    version = ctx.store.latest_version("sft_student")["data_version"]
    rows = sorted(ctx.store.read("sft_validation", sft_version=version), key=lambda row: row["step"])
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert all(row["benchmark"] == "alpaca_eval" and row["win_n"] == 3 for row in rows)
    assert rows[0]["win_rate"] == 0.5 and all(row["win_rate"] is not None for row in rows)
    assert sum(row["selected"] for row in rows) == 1
    validation = result.reported.metrics["validation"]
    assert validation["selection_metric"] == "win_rate"
    assert "validation_unscored" not in result.metadata
    # Both orders of every comparison the job made (steps 1 and 2: 3 prompts each, unless answers repeat).
    assert asked and all((b, a) in asked for a, b in asked)
    checks = {outcome.name: outcome for outcome in result.checks}
    assert checks["sft_not_worse"].details["win_rate_base"] == 0.5
    assert checks["sft_not_worse"].details["selection_metric"] == "win_rate"

    shutil.rmtree(Path(result.reported.path))  # the checkpoint is gone: the same job trains again
    requests = judge_server.stats()["requests"]
    again = make_sft_student(StepContext(config))
    assert again.reported.trained_now
    assert judge_server.stats()["requests"] == requests  # every verdict came from the judge's journal
    assert again.reported.metrics["validation"]["curve"] == validation["curve"]


def _result(metric: str, points: list[tuple[int, float, int]], selected: int) -> TrainedModel:
    value, count = ("win_rate", "win_n") if metric == "win_rate" else ("combined_score", "combined_n")
    curve = [{"step": s, value: v, count: n, "agreement": None, "agreement_n": 0} for s, v, n in points]
    validation = {"curve": curve, "selected_step": selected, "selection_metric": metric}
    return TrainedModel(metrics={"validation": validation, "steps": 10})


@pytest.mark.parametrize(
    ("metric", "shipped", "n", "selected", "improves", "not_worse"),
    [
        ("win_rate", 0.80, 100, 5, True, True),  # pass: the judge prefers the shipped student
        ("win_rate", 0.50, 100, 0, False, True),  # warn: the base student itself shipped
        ("win_rate", 0.45, 100, 5, False, True),  # warn: lower, within the interval
        ("win_rate", 0.30, 100, 5, False, False),  # fail: the judge prefers the base student beyond it
        ("win_rate", 0.30, 8, 5, False, True),  # the same on 8 prompts is within the interval
        ("combined_score", 0.70, 100, 5, True, True),  # both kinds of prompts: the combined per-prompt score
        ("combined_score", 0.25, 100, 5, False, False),
    ],
)
def test_sft_checks_use_the_win_rate_against_the_base_student(
    metric: str, shipped: float, n: int, selected: int, improves: bool, not_worse: bool
) -> None:
    start = 0.5 if metric == "win_rate" else 0.45
    result = _result(metric, [(0, start, n), (5, shipped, n), (10, 0.1, n)], selected)
    outcomes = {o.name: o for o in evaluate_checks("sft_student", result, load_preset("tiny"))}
    assert (outcomes["sft_improves"].passed, outcomes["sft_not_worse"].passed) == (improves, not_worse)
    details = outcomes["sft_not_worse"].details
    value = metric
    assert (details[f"{value}_base"], details[f"{value}_shipped"]) == (start, shipped)
    assert details["difference"] == pytest.approx(shipped - start, abs=1e-4)
    assert details["difference_ci_low"] <= details["difference"] <= details["difference_ci_high"]
    assert math.isfinite(details["difference_ci_high"])


def test_report_shows_the_win_rate_curve(tmp_path: Path) -> None:
    rows = [
        {
            "benchmark": "alpaca_eval",
            "step": step,
            "agreement": None,
            "agreement_n": 0,
            "win_rate": win,
            "win_n": 4,
            "gold_accuracy": None,
            "gold_n": 0,
            "mean_reward": None,
            "mean_length": 5.0,
            "kl": None,
            "prompts": 4,
            "selected": step == 2,
        }
        for step, win in ((0, 0.5), (2, 0.875), (4, 0.75))
    ]
    report = render_report([], tmp_path, sft_validation=rows)
    assert (tmp_path / "sft_validation.png").read_bytes().startswith(b"\x89PNG")
    assert "win rate vs step 0 (n)" in report.markdown and "| 2 | - (0) | 0.875 (4) |" in report.markdown
    assert "the judge's preference of each answer over the base student's answer" in report.markdown
    assert "Shipped: step 2 of 4 trained" in report.markdown


def test_verifiable_and_open_ended_prompts_select_on_the_mean_per_prompt_score(tmp_path: Path) -> None:
    """With both kinds of validation prompts, the selection score is the mean over prompts of agreement (1/0)
    and the judge's preference (1/0.5/0): step 0 scores 0.5 on each open-ended prompt."""
    from transformers import AutoModelForCausalLM

    from rd_pipeline.training.base_comparison import BaseComparison
    from rd_pipeline.training.loading import load_tokenizer
    from rd_pipeline.training.validation import PolicyValidator, ValidationPrompt

    base = resolve_model("tiny-random", tmp_path).location
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), load_tokenizer(base)
    verifiable = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus 1?"}],
            "benchmark": "gsm8k",
            "prompt_id": f"g{i}",
            "vote_answer": "12345",  # no random model writes it: agreement 0
            "item": item_to_json(BenchmarkItem("gsm8k", f"g{i}", "train", f"What is {i} plus 1?")),
        }
        for i in range(2)
    ]
    asked: list[tuple] = []

    def always_prefers_the_student(items):
        asked.extend(items)
        return [1.0] * len(items)

    prompts = [ValidationPrompt.from_record(r) for r in verifiable + _validation(2)]
    comparison = BaseComparison(always_prefers_the_student, tmp_path / "base.json")
    validator = PolicyValidator(prompts, tokenizer, 4, base_comparison=comparison)
    assert validator.selection_metric == "combined_score"
    score_0, values_0 = validator(0, model)
    assert not asked and (tmp_path / "base.json").is_file()
    assert (score_0, values_0["combined_n"]) == (0.25, 4)  # (0 + 0 + 0.5 + 0.5) / 4
    assert (values_0["agreement"], values_0["win_rate"]) == (0.0, 0.5)
    resumed = BaseComparison(always_prefers_the_student, tmp_path / "base.json")  # reads the base answers
    score_1, values_1 = PolicyValidator(prompts, tokenizer, 4, base_comparison=resumed)(1, model)
    assert (score_1, values_1["win_rate"]) == (0.5, 1.0)
    assert [item[3] for item in asked] == [item[2] for item in asked]  # the same model answered both


def test_a_store_written_before_the_win_rate_columns_gains_them(tmp_path: Path) -> None:
    import duckdb

    from rd_pipeline.store import Store

    path = tmp_path / "rd.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "CREATE TABLE sft_validation (benchmark VARCHAR, sft_version VARCHAR, step INTEGER, agreement DOUBLE, "
            "agreement_n INTEGER, gold_accuracy DOUBLE, gold_n INTEGER, mean_reward DOUBLE, mean_length DOUBLE, "
            "kl DOUBLE, prompts INTEGER, selected BOOLEAN)"
        )
        connection.execute(
            "INSERT INTO sft_validation VALUES ('gsm8k', 'old', 0, 0.5, 4, NULL, 0, NULL, 3.0, NULL, 4, true)"
        )
    store = Store(path)
    row = {"benchmark": "alpaca_eval", "sft_version": "new", "step": 0, "agreement": None, "agreement_n": 0}
    row |= {"win_rate": 0.5, "win_n": 4, "gold_accuracy": None, "gold_n": 0, "mean_reward": None}
    row |= {"mean_length": 3.0, "kl": None, "prompts": 4, "selected": True}
    store.replace_partition("sft_validation", "alpaca_eval", [row], sft_version="new")
    assert store.read("sft_validation", "alpaca_eval")[0]["win_rate"] == 0.5
    assert store.read("sft_validation", "gsm8k")[0]["win_rate"] is None
