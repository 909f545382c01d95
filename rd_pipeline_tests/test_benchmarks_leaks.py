"""Evaluation questions never reach training: GSM-Plus is evaluation-only, shared texts leave train, and the
benchmark_prompts check finds any train prompt that matches an eval question of a configured benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import (
    BenchmarkDataError,
    get_benchmark,
    load_benchmark,
    select_prompts,
)
from rd_pipeline.benchmarks.leaks import normalize_text
from rd_pipeline.config import EVAL_ONLY_BENCHMARKS, BenchmarkConfig, ConfigError, parse_config
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")
SAMPLES = Path(__file__).resolve().parents[1] / "rd_pipeline" / "benchmarks" / "samples"


def _config(benchmarks: list[dict], rd_home: Path | None = None, **extra) -> object:
    data = {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}, "benchmarks": benchmarks}
    if rd_home is not None:
        data["paths"] = {"rd_home": str(rd_home)}
    data.update(extra)
    return parse_config(data)


def _overlap_check(metadata: dict, config) -> object:
    (outcome,) = [
        o for o in evaluate_checks("benchmark_prompts", metadata, config) if o.name == "no_eval_overlap"
    ]
    return outcome


def test_gsm_plus_is_evaluation_only_by_default():
    assert get_benchmark("gsm_plus").eval_only and "gsm_plus" in EVAL_ONLY_BENCHMARKS
    assert {name for name in ("gsm8k", "mmlu_pro", "alpaca_eval") if get_benchmark(name).eval_only} == set()
    cfg = BenchmarkConfig(name="gsm_plus")
    assert cfg.eval_only and cfg.train_size == 0
    items = load_benchmark(cfg.model_copy(update={"eval_size": "all"}))
    assert {item.split for item in items} == {"eval"}
    assert len(items) == len(get_benchmark("gsm_plus").load_records("builtin", None))


def test_gsm_plus_train_prompts_need_an_explicit_opt_in():
    with pytest.raises(ConfigError, match=r"benchmarks\.1: .*gsm_plus is evaluation-only.*eval_only: false"):
        _config([{"name": "gsm8k"}, {"name": "gsm_plus", "train_size": 4}])
    config = _config([{"name": "gsm_plus", "train_size": 4, "eval_only": False}])
    assert config.benchmark("gsm_plus").train_size == 4
    with pytest.raises(ConfigError, match="train_size must be 0"):
        _config([{"name": "mmlu_pro", "train_size": 4, "eval_only": True}])


def test_text_normalization_ignores_whitespace_and_case():
    assert normalize_text("  What is\n2 +  2?\t") == normalize_text("what IS 2 + 2?")
    assert normalize_text("What is 2 + 2?") != normalize_text("What is 2 + 3?")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _gsm(question: str, answer: int) -> dict:
    return {"question": question, "answer": f"Work.\n#### {answer}"}


def test_items_in_both_splits_are_dropped_from_train_and_counted(tmp_path):
    train = [_gsm(f"Train question number {i}?", i) for i in range(6)]
    train.append(
        _gsm("  HOW many legs\ndoes a spider have?", 8)
    )  # the test question, spaced and cased differently
    test = [_gsm("How many legs does a spider have?", 8), _gsm("What is 3 + 4?", 7)]
    _write_jsonl(tmp_path / "gsm8k" / "train.jsonl", train)
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", test)
    config = _config([{"name": "gsm8k", "source": "local", "path": str(tmp_path / "gsm8k"),
                       "train_size": 6, "eval_size": 2}], rd_home=tmp_path / "rd")  # fmt: skip
    selection = select_prompts(config, "gsm8k")
    assert selection.dropped_from_train == 1 and selection.train_available == 6
    train_texts = {normalize_text(item.question) for item in selection.items if item.split == "train"}
    assert normalize_text("How many legs does a spider have?") not in train_texts
    result = make_benchmark_prompts(StepContext(config), "gsm8k")
    assert result.metadata["train_dropped_as_eval"] == 1
    assert result.metadata["train_prompts"] == 6
    assert _overlap_check(result.metadata, config).passed
    with pytest.raises(
        BenchmarkDataError,
        match=r"train_size 7 is more than the 6 train prompts available in .*\(1 more are also eval questions",
    ):
        select_prompts(config.model_copy(update={"benchmarks": [config.benchmarks[0].model_copy(
            update={"train_size": 7})]}), "gsm8k")  # fmt: skip


def test_gsm_plus_seed_matching_a_gsm8k_test_question_fails_the_check(tmp_path):
    """The built-in GSM-Plus sample opted into training, against a GSM8K test set holding its seed questions."""
    plus = [json.loads(line) for line in (SAMPLES / "gsm_plus_sample.jsonl").read_text().splitlines() if line]
    seeds = sorted({row["seed_question"] for row in plus})
    test = [_gsm(seed.upper(), 1) for seed in seeds]  # case differs: still the same question
    _write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [_gsm(f"Unrelated question {i}?", i) for i in range(4)])
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", test)
    config = _config(
        [
            {
                "name": "gsm8k",
                "source": "local",
                "path": str(tmp_path / "gsm8k"),
                "train_size": 4,
                "eval_size": 2,
            },
            {"name": "gsm_plus", "eval_only": False, "train_size": 10, "eval_size": 4},
        ],
        rd_home=tmp_path / "rd",
    )
    with pytest.raises(
        RuntimeError, match=r"benchmark_prompts\[gsm_plus\]: check no_eval_overlap failed.*gsm8k: 10"
    ):
        make_benchmark_prompts(StepContext(config), "gsm_plus")  # blocking: nothing is stored
    assert StepContext(config).store.count("benchmark_prompts", "gsm_plus") == 0
    unenforced = config.model_copy(update={"checks": config.checks.model_copy(update={"enforce": False})})
    result = make_benchmark_prompts(StepContext(unenforced), "gsm_plus")
    assert result.metadata["train_eval_overlaps"] == {"gsm8k": 10, "gsm_plus": 0}
    outcome = _overlap_check(result.metadata, config)
    assert not outcome.passed and outcome.blocking and outcome.refuses_commit
    assert outcome.details["overlaps"] == "gsm8k: 10"
    assert outcome.details["overlapping_train_prompts"] == 10
    clean = _config([{"name": "gsm8k", "train_size": 4, "eval_size": 2}], rd_home=tmp_path / "rd2")
    gsm8k = make_benchmark_prompts(StepContext(clean), "gsm8k")
    assert gsm8k.metadata["train_eval_overlaps"] == {"gsm8k": 0}
    assert _overlap_check(gsm8k.metadata, clean).passed


def test_check_is_a_function_of_the_step_metadata():
    config = _config([{"name": "gsm8k"}])
    failed = _overlap_check({"train_eval_overlaps": {"gsm8k": 0, "mmlu_pro": 3}}, config)
    assert not failed.passed and failed.details["overlaps"] == "mmlu_pro: 3"
    assert _overlap_check({"train_eval_overlaps": {"gsm8k": 0}}, config).passed
    assert not _overlap_check({}, config).passed  # not measured: not known to be clean


@needs_data
def test_real_gsm_plus_seeds_are_gsm8k_test_questions_and_are_caught(tmp_path):
    config = _config(
        [
            {
                "name": "gsm8k",
                "source": "local",
                "path": str(DATA / "gsm8k"),
                "train_size": 20,
                "eval_size": 5,
            },
            {
                "name": "gsm_plus",
                "source": "local",
                "path": str(DATA / "gsm_plus"),
                "eval_only": False,
                "train_size": 50,
                "eval_size": 5,
            },
        ],
    )
    selection = select_prompts(config, "gsm_plus")
    assert selection.overlaps["gsm8k"] == 50
    outcome = _overlap_check({"train_eval_overlaps": selection.overlaps}, config)
    assert not outcome.passed and outcome.details["overlaps"] == "gsm8k: 50"
    assert select_prompts(config, "gsm8k").overlaps == {"gsm8k": 0, "gsm_plus": 0}


@needs_data
def test_real_gsm_plus_by_default_evaluates_all_2400_items():
    cfg = BenchmarkConfig(name="gsm_plus", source="local", path=str(DATA / "gsm_plus"), eval_size="all")
    items = load_benchmark(cfg)
    assert len(items) == 2400 and {item.split for item in items} == {"eval"}


@needs_data
def test_real_mmlu_pro_repeated_questions_leave_train():
    cfg = BenchmarkConfig(
        name="mmlu_pro", source="local", path=str(DATA / "mmlu_pro"), train_size=0, eval_size=0
    )
    config = _config([cfg.model_dump()])
    selection = select_prompts(config, "mmlu_pro")
    records = get_benchmark("mmlu_pro").load_records("local", str(DATA / "mmlu_pro"))
    eval_texts = {normalize_text(item.question) for item in records if item.split == "eval"}
    shared = [
        item for item in records if item.split == "train" and normalize_text(item.question) in eval_texts
    ]
    assert len(shared) > 0 and selection.dropped_from_train == len(shared)
    total_train = sum(item.split == "train" for item in records)
    assert selection.train_available == total_train - len(shared)
    everything = config.model_copy(update={"benchmarks": [cfg.model_copy(update={
        "train_size": selection.train_available, "eval_size": "all"})]})  # fmt: skip
    full = select_prompts(everything, "mmlu_pro")
    train_texts = {normalize_text(item.question) for item in full.items if item.split == "train"}
    assert not train_texts & eval_texts and full.overlaps == {"mmlu_pro": 0, "gsm8k": 0}
