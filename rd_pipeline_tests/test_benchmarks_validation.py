"""Bad benchmark input fails before any work, with one line naming the file, line or field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import BenchmarkDataError, get_benchmark, load_benchmark, validate_benchmarks
from rd_pipeline.config import BenchmarkConfig, load_config, load_preset, parse_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


def _config(benchmarks: list[dict]):
    return parse_config(
        {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}, "benchmarks": benchmarks}
    )


def _mmlu_line(question_id: int) -> bytes:
    row = {"question_id": question_id, "question": f"Question {question_id}?", "options": ["a", "b", "c"],
           "answer": "B", "category": "math"}  # fmt: skip
    return json.dumps(row).encode() + b"\n"


def test_non_utf8_jsonl_names_file_line_and_byte_offset(tmp_path):
    path = tmp_path / "test.jsonl"
    first, second = _mmlu_line(1), _mmlu_line(2)
    bad = (
        b'{"question_id": 3, "question": "caf\xe9?", "options": ["a", "b"], "answer": "A", "category": "x"}\n'
    )
    path.write_bytes(first + second + bad)
    with pytest.raises(BenchmarkDataError) as error:
        get_benchmark("mmlu_pro").load_records("local", str(path))
    offset = len(first) + len(second) + bad.index(b"\xe9")
    assert str(error.value) == f"{path} line 3: not UTF-8 text (byte offset {offset}: 0xe9)"
    assert "\n" not in str(error.value)


def test_non_utf8_json_array_names_file_line_and_byte_offset(tmp_path):
    path = tmp_path / "alpaca_eval_gpt4_baseline.json"
    text = (
        b'[\n  {"instruction": "Say hi.", "output": "Hi"},\n  {"instruction": "Na\xefve?", "output": ""}\n]\n'
    )
    path.write_bytes(text)
    with pytest.raises(BenchmarkDataError) as error:
        get_benchmark("alpaca_eval").load_records("local", str(path))
    offset = text.index(b"\xef")
    assert str(error.value) == f"{path} line 3: not UTF-8 text (byte offset {offset}: 0xef)"


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _mmlu_line(1) + _mmlu_line(2))
    assert len(get_benchmark("mmlu_pro").load_records("local", str(path))) == 2


@pytest.mark.parametrize(
    ("name", "file_name", "content"),
    [
        ("mmlu_pro", "test.jsonl", b""),
        ("gsm_plus", "gsmplus_testmini.jsonl", b"\n  \n"),
        ("alpaca_eval", "alpaca_eval_gpt4_baseline.json", b""),
        ("alpaca_eval", "alpaca_eval_gpt4_baseline.json", b"[ ]\n"),
    ],
)
def test_empty_data_file_is_an_error(tmp_path, name, file_name, content):
    path = tmp_path / file_name
    path.write_bytes(content)
    with pytest.raises(BenchmarkDataError, match=rf"^{path}: empty file \(no records\)$"):
        get_benchmark(name).load_records("local", str(tmp_path))


def test_empty_instruction_file_is_an_error(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_text("")
    cfg = {"name": "alpaca_eval", "instructions": {"source": "local", "path": str(path)}}
    with pytest.raises(BenchmarkDataError, match=rf"^{path}: empty file \(no records\)$"):
        validate_benchmarks(_config([cfg]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"name": "gsm8k", "train_size": 25},
            "gsm8k: train_size 25 is more than the 24 train prompts available",
        ),
        (
            {"name": "gsm8k", "eval_size": 17},
            "gsm8k: eval_size 17 is more than the 16 eval prompts available",
        ),
        ({"name": "alpaca_eval", "train_size": 41}, "alpaca_eval: train_size 41 is more than the 40 train"),
        ({"name": "gsm_plus", "eval_size": 38}, "gsm_plus: eval_size 38 is more than the 37 eval prompts"),
    ],
)
def test_sizes_beyond_the_data_are_errors_with_both_numbers(settings, message):
    with pytest.raises(BenchmarkDataError, match=message):
        load_benchmark(BenchmarkConfig(**settings))
    with pytest.raises(BenchmarkDataError, match=message):
        validate_benchmarks(_config([{"name": "mmlu_pro"}, settings]))


def test_eval_size_all_takes_every_eval_record():
    items = load_benchmark(BenchmarkConfig(name="gsm8k", train_size=0, eval_size="all"))
    assert len(items) == 16 and {item.split for item in items} == {"eval"}


def test_validate_benchmarks_reports_each_configured_benchmark():
    config = load_preset("tiny")
    selections = validate_benchmarks(config)
    assert [s.benchmark for s in selections] == config.benchmark_names
    for selection, cfg in zip(selections, config.benchmarks, strict=True):
        assert sum(item.split == "train" for item in selection.items) == cfg.train_size
        assert selection.overlaps and not any(selection.overlaps.values())


def test_validation_runs_without_loading_any_model_library(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_bytes(b"")
    code = (
        "import sys\n"
        "from rd_pipeline.benchmarks import BenchmarkDataError, validate_benchmarks\n"
        "from rd_pipeline.config import load_preset, parse_config\n"
        "validate_benchmarks(load_preset('tiny'))\n"
        "config = parse_config({'teacher': {'ref': 'x'}, 'student': {'ref': 'y'}, 'benchmarks': [\n"
        f"    {{'name': 'mmlu_pro', 'source': 'local', 'path': {str(bad)!r}}}]}})\n"
        "try:\n"
        "    validate_benchmarks(config)\n"
        "except BenchmarkDataError as error:\n"
        "    print(error)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm', 'dagster') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"{bad}: empty file (no records)", "[]"]


def test_gpu_example_benchmarks():
    config = load_config(ROOT / "examples" / "gpu.yaml")
    gsm8k, gsm_plus, mmlu_pro, alpaca = (config.benchmark(name) for name in config.benchmark_names)
    assert gsm8k.source == "local" and gsm8k.train_size > 0 and gsm8k.eval_size == "all"
    assert gsm_plus.eval_only and gsm_plus.train_size == 0 and gsm_plus.eval_size == "all"
    assert alpaca.eval_size == "all" and alpaca.instructions is not None
    assert "alpaca_eval" not in str(alpaca.instructions.hub_id)
    assert mmlu_pro.train_size > 0


@needs_data
def test_gpu_example_sizes_fit_the_real_files():
    """The GPU example's sizes, on the real files (the instruction source replaced by the built-in one)."""
    config = load_config(ROOT / "examples" / "gpu.yaml")
    local = [
        cfg.model_copy(update={"source": "local", "path": str(DATA / cfg.name), "instructions": None})
        for cfg in config.benchmarks
    ]
    local[3] = local[3].model_copy(update={"train_size": 40})
    selections = validate_benchmarks(config.model_copy(update={"benchmarks": local}))
    evaluated = {s.benchmark: sum(item.split == "eval" for item in s.items) for s in selections}
    assert evaluated == {"gsm8k": 1319, "gsm_plus": 2400, "mmlu_pro": 2000, "alpaca_eval": 805}
    assert all(not any(s.overlaps.values()) for s in selections)


def test_a_multi_line_hub_failure_is_reported_on_one_line(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'TIGER-Lab/MMLU-Pro' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkDataError) as error:
        validate_benchmarks(_config([{"name": "mmlu_pro", "source": "hub"}]))
    assert str(error.value) == (
        "hub:TIGER-Lab/MMLU-Pro[test]: cannot load from the hub: "
        "Couldn't reach 'TIGER-Lab/MMLU-Pro' on the Hub (LocalEntryNotFoundError)"
    )
