"""The evaluation judge: its own config field, a warning when it is one of the evaluated models, and the
AlpacaEval comparisons made by it (through a real local OpenAI-compatible server that returns top_logprobs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rd_pipeline.benchmarks.base import BenchmarkItem
from rd_pipeline.config import ConfigError, parse_config
from rd_pipeline.evaluation.metrics import win_rate
from rd_pipeline.evaluation.report import render_report
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.eval_judge import judge_against_reference, judge_warnings
from rd_pipeline_tests.support.fault_server import FaultServer, FaultSettings

BASE = {"teacher": {"ref": "teacher-model"}, "student": {"ref": "tiny-random"}}


def _api(base_url: str, model: str) -> dict:
    return {"backend": "openai", "api": {"base_url": base_url, "model": model, "api_key_env": None}}


def test_eval_judge_defaults_to_the_labelling_judge():
    config = parse_config(BASE)
    assert config.eval_judge_model == config.teacher
    config = parse_config({**BASE, "judge": {"ref": "labeller"}})
    assert config.eval_judge_model.ref == "labeller"
    config = parse_config({**BASE, "judge": {"ref": "labeller"}, "eval": {"judge": {"ref": "referee"}}})
    assert config.eval_judge_model.ref == "referee" and config.judge_model.ref == "labeller"


def test_eval_batch_size_is_gone_with_a_message_that_names_it():
    with pytest.raises(ConfigError, match=r"eval\.batch_size"):
        parse_config({**BASE, "eval": {"batch_size": 8}})


@pytest.mark.parametrize(
    ("extra", "roles"),
    [
        ({}, ["teacher"]),  # by default the teacher judges itself
        ({"judge": {"ref": "labeller"}}, []),
        ({"eval": {"judge": {"ref": "tiny-random"}}}, ["base_student"]),
        ({"eval": {"judge": {"ref": "teacher-model", "revision": "v2"}}}, []),
        ({"eval": {"judge": {"ref": "other"}}}, []),
    ],
)
def test_warning_when_the_eval_judge_is_an_evaluated_model(extra, roles):
    warnings = judge_warnings(parse_config({**BASE, **extra}))
    assert len(warnings) == (1 if roles else 0)
    for role in roles:
        assert role.replace("_", " ") in warnings[0] and "eval.judge" in warnings[0]


def test_warning_for_a_judge_behind_the_same_endpoint_model(tmp_path: Path):
    url = "http://127.0.0.1:9/v1"
    config = parse_config({"teacher": {"ref": "t", **_api(url, "big")}, "student": {"ref": "tiny-random"}})
    assert "teacher" in judge_warnings(config)[0]
    other = parse_config(
        {
            "teacher": {"ref": "t", **_api(url, "big")},
            "student": {"ref": "tiny-random"},
            "eval": {"judge": {"ref": "j", **_api(url, "referee")}},
        }
    )
    assert judge_warnings(other) == []


def test_report_shows_warnings(tmp_path: Path):
    est = win_rate([1.0, 0.5, 0.0])
    row = {
        "benchmark": "alpaca_eval",
        "model_role": "teacher",
        "model_version": "v",
        "metric": "win_rate",
        "value": est.value,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
    }
    report = render_report([row], tmp_path, warnings=["The eval judge is the teacher."])
    assert "## Warnings" in report.markdown and "- The eval judge is the teacher." in report.markdown
    assert report.markdown.index("## Warnings") < report.markdown.index("## Scores")
    assert report.warnings == ["The eval judge is the teacher."]
    plain = render_report([row], tmp_path / "plain")
    assert "## Warnings" not in plain.markdown


def _logprob_script(body: dict) -> list[tuple[str, dict[str, float]]] | None:
    """Prefers the response holding "llama" with probability 0.8, in whichever position it is shown."""
    last = body["messages"][-1]
    if last["role"] != "assistant" or not last["content"].endswith("[["):
        return None
    user = body["messages"][1]["content"]
    first = "A" if user.index("RESPONSE A") < user.find("llama") < user.index("RESPONSE B") else "B"
    other = "B" if first == "A" else "A"
    return [(first, {first: math.log(0.8), other: math.log(0.15), "C": math.log(0.05)}), ("]]", {"]]": 0.0})]


def _referee_config(base_url: str, tmp_path: Path):
    """A tiny-random teacher with the served "referee" as eval judge, state in tmp_path."""
    return parse_config(
        {
            **BASE,
            "teacher": {"ref": "tiny-random"},
            "eval": {"judge": {"ref": "referee", **_api(base_url, "referee")}},
            "paths": {"rd_home": str(tmp_path)},
        }
    )


def _alpaca_items() -> list[BenchmarkItem]:
    return [
        BenchmarkItem("alpaca_eval", f"i{k}", "eval", f"Question {k}", reference=f"reference {k}")
        for k in range(3)
    ]


def test_alpaca_comparisons_use_the_eval_judge(tmp_path: Path):
    with FaultServer(FaultSettings(model="referee", logprob_script=_logprob_script)) as server:
        config, items = _referee_config(server.base_url, tmp_path), _alpaca_items()
        texts = {"teacher": ["a llama", "no", "llama again"]}
        judgments = judge_against_reference(StepContext(config), items, texts, "")["teacher"]
        assert server.stats()["answered_total"] > 0
    # llama shown first or second: 0.8 + 0.05 / 2 = 0.825 for it; without it the judge leans to B in both
    # orders (0.175 and 0.825 for the response), which averages to an even 0.5
    assert [j.preference for j in judgments] == pytest.approx([0.825, 0.5, 0.825])
    assert all(j.paths == ("probability", "probability") for j in judgments)


def test_every_models_responses_are_judged_in_one_session_of_the_eval_judge(tmp_path: Path, monkeypatch):
    from rd_pipeline.steps import eval_judge
    from rd_pipeline.steps.eval_scoring import ScoredModels, judge_models

    built = []
    make_generator = eval_judge.make_generator
    monkeypatch.setattr(
        eval_judge, "make_generator", lambda *a, **k: built.append(a) or make_generator(*a, **k)
    )
    responses = {
        "teacher": ["a llama", "no", "llama again"],
        "base student": ["a llama", "no", "llama again"],
        "SFT student": ["no", "a llama", "no"],
    }
    with FaultServer(FaultSettings(model="referee", logprob_script=_logprob_script)) as server:
        config, items = _referee_config(server.base_url, tmp_path), _alpaca_items()
        scored = ScoredModels()
        judge_models(StepContext(config), "alpaca_eval", items, responses, scored)
        # 6 distinct (response, reference) comparisons (the base student repeats the teacher), each in two orders,
        # each order an explanation and a verdict
        assert server.stats()["answered_total"] == 6 * 2 * 2
    assert len(built) == 1
    assert [j.key for j in scored.judgments["SFT student"]] == ["i0", "i1", "i2"]
    assert [j.preference for j in scored.judgments["teacher"]] == pytest.approx([0.825, 0.5, 0.825])
    assert scored.judgments["base student"] == scored.judgments["teacher"]
    assert [j.preference for j in scored.judgments["SFT student"]] == pytest.approx([0.5, 0.825, 0.5])


def test_an_eval_judge_behind_an_api_is_checked_and_placed_like_the_other_models(monkeypatch):
    from rd_pipeline.placement import step_gpus
    from rd_pipeline.preflight import InputError, check_api_keys

    api = {
        "backend": "openai",
        "api": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "RD_TEST_EVAL_KEY"},
    }
    config = parse_config(
        {
            "teacher": {"ref": "t", **api, "api": {**api["api"], "api_key_env": None}},
            "student": {"ref": "tiny-random", "backend": "openai", "api": {"api_key_env": None}},
            "eval": {"judge": {"ref": "referee", **api}},
        }
    )
    monkeypatch.delenv("RD_TEST_EVAL_KEY", raising=False)
    with pytest.raises(InputError, match=r"eval\.judge\.api\.api_key_env names \$RD_TEST_EVAL_KEY"):
        check_api_keys(config)
    monkeypatch.setenv("RD_TEST_EVAL_KEY", "sk-test")
    check_api_keys(config)
    apis_only = {"teacher": config.teacher.model_dump(), "student": config.student.model_dump()}
    assert step_gpus("eval_scores", parse_config(apis_only)) == 0
    local_judge = parse_config({**apis_only, "eval": {"judge": {"ref": "referee"}}})
    assert step_gpus("eval_scores", local_judge) == 1  # only the eval judge runs here
