"""Open-ended training prompts come from an instruction source that is never AlpacaEval; AlpacaEval is evaluated
in full."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import BenchmarkDataError, get_benchmark, load_benchmark
from rd_pipeline.benchmarks.instructions import load_instructions
from rd_pipeline.benchmarks.leaks import normalize_text
from rd_pipeline.config import BenchmarkConfig, ConfigError, InstructionSourceConfig, parse_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")
ALPACA_FILE = DATA / "alpaca_eval" / "alpaca_eval_gpt4_baseline.json"


def _texts(items) -> set[str]:
    return {normalize_text(item.question) for item in items}


def test_builtin_instructions_are_varied_and_disjoint_from_the_alpaca_eval_sample():
    items = load_instructions(InstructionSourceConfig())
    assert 30 <= len(items) <= 40 and len(_texts(items)) == len(items)
    assert {item.split for item in items} == {"train"} and {item.benchmark for item in items} == {
        "alpaca_eval"
    }
    assert len({item.meta["category"] for item in items}) >= 8
    assert not _texts(items) & _texts(get_benchmark("alpaca_eval").load_records("builtin", None))


@needs_data
def test_builtin_instructions_are_disjoint_from_the_real_alpaca_eval():
    real = get_benchmark("alpaca_eval").load_records("local", str(DATA / "alpaca_eval"))
    assert len(real) == 805
    assert not _texts(load_instructions(InstructionSourceConfig())) & _texts(real)


def test_alpaca_eval_trains_on_instructions_and_evaluates_every_alpaca_eval_record():
    cfg = BenchmarkConfig(name="alpaca_eval", train_size=8)
    assert cfg.eval_size == "all"
    items = load_benchmark(cfg)
    train = [item for item in items if item.split == "train"]
    evals = [item for item in items if item.split == "eval"]
    assert len(train) == 8 and _texts(train) <= _texts(load_instructions(InstructionSourceConfig()))
    assert _texts(evals) == _texts(get_benchmark("alpaca_eval").load_records("builtin", None))
    assert all(item.reference is not None for item in evals) and all(item.reference is None for item in train)


@needs_data
def test_real_alpaca_eval_is_evaluated_on_all_805_instructions():
    items = load_benchmark(
        BenchmarkConfig(name="alpaca_eval", source="local", path=str(DATA / "alpaca_eval"))
    )
    assert sum(item.split == "eval" for item in items) == 805


def test_local_jsonl_and_json_files_with_a_chosen_field(tmp_path):
    rows = [{"prompt": f"Describe colour number {i}."} for i in range(5)]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    array = tmp_path / "mine.json"
    array.write_text(json.dumps(rows, indent=1))
    for path in (jsonl, array):
        cfg = InstructionSourceConfig(source="local", path=str(path), instruction_field="prompt")
        assert [item.question for item in load_instructions(cfg)] == [row["prompt"] for row in rows]
    jsonl.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "no prompt here"}) + "\n")
    cfg = InstructionSourceConfig(source="local", path=str(jsonl), instruction_field="prompt")
    with pytest.raises(BenchmarkDataError, match=rf"^{jsonl} line 2: missing field 'prompt'$"):
        load_instructions(cfg)


def test_an_input_field_follows_its_instruction(tmp_path):
    path = tmp_path / "alpaca_style.jsonl"
    rows = [
        {"instruction": "Sort these words.", "input": "pear, fig, apple"},
        {"instruction": "Say hi.", "input": ""},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = InstructionSourceConfig(source="local", path=str(path), input_field="input")
    assert [item.question for item in load_instructions(cfg)] == [
        "Sort these words.\n\npear, fig, apple",
        "Say hi.",
    ]
    path.write_text(json.dumps({"instruction": "Say hi."}) + "\n")
    with pytest.raises(BenchmarkDataError, match=rf"^{path} line 1: missing field 'input'$"):
        load_instructions(cfg)


def test_hub_instructions_go_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return [{"instruction": "Name a bird that cannot fly."}, {"instruction": "Name a fish."}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = InstructionSourceConfig(source="hub", hub_id="someone/instructions", hub_split="train")
    assert [item.question for item in load_instructions(cfg)] == [
        "Name a bird that cannot fly.",
        "Name a fish.",
    ]
    assert calls == [("someone/instructions", None, "train")]


def test_the_instruction_source_is_never_alpaca_eval(tmp_path):
    with pytest.raises(ConfigError, match="AlpacaEval"):
        alpaca = {"name": "alpaca_eval", "instructions": {"source": "hub", "hub_id": "tatsu-lab/alpaca_eval"}}
        parse_config({"teacher": {"ref": "x"}, "student": {"ref": "y"}, "benchmarks": [alpaca]})
    with pytest.raises(ValueError, match="AlpacaEval"):
        InstructionSourceConfig(source="local", path="/data/alpaca_eval/alpaca_eval_gpt4_baseline.json")
    with pytest.raises(ValueError, match="only alpaca_eval"):
        BenchmarkConfig(name="gsm8k", instructions=InstructionSourceConfig())


def test_alpaca_eval_instructions_under_another_name_are_refused(tmp_path):
    """A copy of the evaluation set is recognised by content, whatever the file is called."""
    sample = Path(get_benchmark("alpaca_eval").load_records.__code__.co_filename).parent / "samples"
    copy = tmp_path / "my_instructions.json"
    shutil.copy(sample / "alpaca_eval_sample.json", copy)
    cfg = BenchmarkConfig(name="alpaca_eval", train_size=2, eval_size=2,
                          instructions=InstructionSourceConfig(source="local", path=str(copy)))  # fmt: skip
    with pytest.raises(BenchmarkDataError, match=rf"^{copy}: .*AlpacaEval"):
        load_benchmark(cfg)
