"""Configuration: presets load, bad files fail with the field path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_pipeline.config import ConfigError, load_config, load_preset, preset_names, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tiny", "smol"])
def test_presets_load(name: str):
    config = load_preset(name)
    assert config.benchmark_names == ["gsm8k", "gsm_plus", "mmlu_pro", "alpaca_eval"]
    assert config.judge_model == config.teacher


def test_gpu_example_loads_and_uses_the_api_teacher():
    config = load_config(ROOT / "examples" / "gpu.yaml")
    assert config.teacher.backend == "openai" and config.teacher.api.api_key_env == "OPENAI_API_KEY"
    assert config.student.backend == "vllm"


def test_bad_config_names_every_field_path(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "teacher: {ref: tiny-random}\n"
        "student: {ref: tiny-random}\n"
        "sampling: {n: 0, temperatures: [0.7]}\n"
        "benchmarks:\n  - {name: gsm8k}\n  - {name: gsm_plus, source: web}\n"
        "sft: {learning_rat: 0.1}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "sampling.n: Input should be greater than or equal to 1 (got 0)" in message
    assert "benchmarks.1.source: Input should be 'builtin', 'local' or 'hub' (got 'web')" in message
    assert "sft.learning_rat: Extra inputs are not permitted" in message


def test_semantic_errors(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {ref: x, backend: openai}\nstudent: {ref: y}\n")
    with pytest.raises(ConfigError, match="teacher: Value error, backend 'openai' needs an 'api' section"):
        load_config(path)
    path.write_text("teacher: {ref: x}\nstudent: {ref: y}\nbenchmarks: [{name: gsm8k}, {name: gsm8k}]\n")
    with pytest.raises(ConfigError, match="benchmarks listed twice"):
        load_config(path)
    path.write_text("teacher: {ref: x}\nstudent: {ref: y}\nbenchmarks: [{name: gsm8k, source: local}]\n")
    with pytest.raises(ConfigError, match="source 'local' needs 'path'"):
        load_config(path)


def test_unreadable_inputs(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_preset("huge")
    assert {"tiny", "smol"} <= set(preset_names())


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("RD_CONFIG", raising=False)
    monkeypatch.delenv("RD_PRESET", raising=False)
    assert resolve_config().teacher.ref == "tiny-random"
    monkeypatch.setenv("RD_PRESET", "smol")
    assert resolve_config().teacher.ref == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="either a config file or a preset"):
        resolve_config("a.yaml", "tiny")
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    assert load_preset("tiny").rd_home() == tmp_path.resolve()


def _all_sections() -> list[type]:
    """Every pydantic model reachable from PipelineConfig's fields."""
    from pydantic import BaseModel

    from rd_pipeline.config import PipelineConfig

    seen: list[type] = []
    pending: list[type] = [PipelineConfig]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    pending.append(arg)
    return seen


def _type_args(annotation: object) -> list[object]:
    from typing import get_args

    found, pending = [], [annotation]
    while pending:
        item = pending.pop()
        found.append(item)
        pending.extend(get_args(item))
    return found


def test_every_config_field_has_a_description():
    missing = [
        f"{model.__name__}.{name}"
        for model in _all_sections()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert missing == []


def test_rl_batch_size_not_a_multiple_of_num_generations_fails_at_load_time(tmp_path: Path):
    path = tmp_path / "rl.yaml"
    path.write_text(
        "teacher: {ref: tiny-random}\nstudent: {ref: tiny-random}\nrl: {batch_size: 6, num_generations: 4}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message
    assert "rl:" in message and "batch_size (6)" in message and "num_generations (4)" in message


def test_benchmark_lists_match_the_benchmark_registry():
    from rd_pipeline.benchmarks import BENCHMARKS
    from rd_pipeline.config import (
        ALL_BENCHMARKS,
        EVAL_ONLY_BENCHMARKS,
        OPEN_ENDED_BENCHMARKS,
        BenchmarkConfig,
    )

    assert ALL_BENCHMARKS == tuple(BENCHMARKS)
    assert OPEN_ENDED_BENCHMARKS == tuple(name for name, b in BENCHMARKS.items() if not b.verifiable)
    assert EVAL_ONLY_BENCHMARKS == tuple(name for name, b in BENCHMARKS.items() if b.eval_only)
    assert [BenchmarkConfig(name=name).eval_only for name in BENCHMARKS] == [
        b.eval_only for b in BENCHMARKS.values()
    ]
