"""Loaders against the real benchmark files, the built-in samples, and malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import (
    BENCHMARKS,
    BenchmarkDataError,
    get_benchmark,
    is_item_correct,
    load_benchmark,
)
from rd_pipeline.config import BenchmarkConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SIZES = {"gsm8k": 7473 + 1319, "gsm_plus": 2400, "mmlu_pro": 12032, "alpaca_eval": 805}
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def real_items():
    return {name: get_benchmark(name).load_records("local", str(DATA / name)) for name in BENCHMARKS}


@needs_data
@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_files_load_with_unique_ids(real_items, name):
    items = real_items[name]
    assert len(items) == REAL_SIZES[name]
    assert len({item.item_id for item in items}) == len(items)
    # AlpacaEval is evaluation data only; the others carry (or are carved into) both splits
    assert {item.split for item in items} == ({"eval"} if name == "alpaca_eval" else {"train", "eval"})
    assert all(item.benchmark == name and item.question.strip() for item in items)


@needs_data
def test_gsm8k_uses_its_own_splits_and_gold(real_items):
    items = real_items["gsm8k"]
    assert sum(item.split == "train" for item in items) == 7473
    first = next(item for item in items if item.question.startswith("Natalia sold clips"))
    assert first.split == "train" and first.gold == "72"
    assert all("," not in item.gold for item in items)


@needs_data
def test_gsm_plus_gold_meta_and_seed_level_split(real_items):
    items = real_items["gsm_plus"]
    assert sum(item.gold == "None" for item in items) == 300
    assert all(item.gold == "None" for item in items if item.meta["perturbation_type"] == "critical thinking")
    assert len({item.meta["perturbation_type"] for item in items}) == 8
    rows = [json.loads(line) for line in (DATA / "gsm_plus" / "gsmplus_testmini.jsonl").open()]
    split_by_seed: dict[str, set[str]] = {}
    for row, item in zip(rows, items, strict=True):
        split_by_seed.setdefault(row["seed_question"], set()).add(item.split)
    assert all(len(splits) == 1 for splits in split_by_seed.values())


@needs_data
def test_mmlu_pro_letter_is_authoritative(real_items):
    by_id = {item.item_id: item for item in real_items["mmlu_pro"]}
    assert by_id["3983"].gold == "C"
    assert by_id["70"].gold == "I" and by_id["70"].meta["category"] == "business"
    assert {len(item.options) for item in by_id.values()} >= {3, 10}


@needs_data
def test_alpaca_eval_reference_outputs(real_items):
    items = real_items["alpaca_eval"]
    assert all(item.reference and item.gold is None for item in items)
    assert items[0].question.startswith("What are the names of some famous actors")


@needs_data
@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_selection_is_deterministic_disjoint_and_sized(name):
    # GSM-Plus trains only when a config opts in; AlpacaEval's train prompts come from the built-in instructions.
    cfg = BenchmarkConfig(name=name, source="local", path=str(DATA / name), train_size=30, eval_size=25,
                          eval_only=False)  # fmt: skip
    first, second = load_benchmark(cfg), load_benchmark(cfg)
    assert [i.item_id for i in first] == [i.item_id for i in second]
    train, evals = first[:30], first[30:]
    assert len(evals) == 25 and {i.split for i in train} == {"train"} and {i.split for i in evals} == {"eval"}
    assert not {i.item_id for i in train} & {i.item_id for i in evals}
    bigger = load_benchmark(cfg.model_copy(update={"train_size": 35}))
    assert [i.item_id for i in bigger[:30]] == [i.item_id for i in train]


@needs_data
def test_local_path_may_name_the_file_itself():
    cfg = BenchmarkConfig(
        name="mmlu_pro", source="local", path=str(DATA / "mmlu_pro" / "test.jsonl"), train_size=2, eval_size=2
    )
    assert len(load_benchmark(cfg)) == 4


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_builtin_samples(name):
    items = get_benchmark(name).load_records("builtin", None)
    assert len(items) >= 24
    assert len({i.item_id for i in items}) == len(items)
    cfg = BenchmarkConfig(name=name, eval_only=False, train_size=8, eval_size="all")
    selected = load_benchmark(cfg)
    assert {i.split for i in selected} == {"train", "eval"}
    evaluated = {i.item_id for i in selected if i.split == "eval"}
    assert evaluated == {i.item_id for i in items if name == "alpaca_eval" or i.split == "eval"}


def test_builtin_sample_shapes():
    mmlu = get_benchmark("mmlu_pro").load_records("builtin", None)
    assert {len(i.options) for i in mmlu} >= {4, 10}
    assert len({i.meta["category"] for i in mmlu}) >= 10
    plus = get_benchmark("gsm_plus").load_records("builtin", None)
    assert sum(i.gold == "None" for i in plus) >= 3
    assert len({i.meta["perturbation_type"] for i in plus}) == 8
    gsm = get_benchmark("gsm8k").load_records("builtin", None)
    assert {i.split for i in gsm} == {"train", "eval"}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_builtin_gold_matches_the_extractor(name):
    """Each built-in solution's own final answer is what the extractor reads from it."""
    bench = get_benchmark(name)
    if not bench.verifiable:
        return
    for item in bench.load_records("builtin", None):
        if name == "mmlu_pro":
            assert is_item_correct(item, f"The answer is ({item.gold}).")
        else:
            assert is_item_correct(item, f"Some work.\nThe answer is {item.gold}.")


def test_hub_source_goes_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        rows = {"train": [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}],
                "test": [{"question": "What is 4 + 4?", "answer": "#### 8"}]}  # fmt: skip
        return rows[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = get_benchmark("gsm8k").load_records("hub", None)
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert [(i.split, i.gold) for i in items] == [("train", "5"), ("eval", "8")]


def test_hub_failure_is_a_readable_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkDataError, match=r"hub:TIGER-Lab/MMLU-Pro\[test\].*hub unreachable"):
        get_benchmark("mmlu_pro").load_records("hub", None)


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD_GSM = json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (
            '{"question": "Q?", "answer": "no final line"}',
            "line 3: field 'answer' has no '#### <number>' line",
        ),
        ('{"question": "Q?"', "line 3: invalid JSON"),
        ('{"answer": "#### 4"}', "line 3: missing field 'question'"),
        ('{"question": 7, "answer": "#### 4"}', "line 3: field 'question' must be a string"),
        ('["question", "answer"]', "line 3: expected a JSON object"),
    ],
)
def test_malformed_gsm8k_names_file_line_and_field(tmp_path, bad_line, message):
    _write(
        tmp_path, "train.jsonl", [GOOD_GSM, json.dumps({"question": "Two?", "answer": "#### 2"}), bad_line]
    )
    _write(tmp_path, "test.jsonl", [json.dumps({"question": "Three?", "answer": "#### 3"})])
    with pytest.raises(BenchmarkDataError) as error:
        get_benchmark("gsm8k").load_records("local", str(tmp_path))
    assert str(error.value).startswith(str(tmp_path / "train.jsonl"))
    assert message in str(error.value)


def test_missing_split_file_is_named(tmp_path):
    _write(tmp_path, "train.jsonl", [GOOD_GSM])
    with pytest.raises(BenchmarkDataError, match="test.jsonl: file not found"):
        get_benchmark("gsm8k").load_records("local", str(tmp_path))


def test_duplicate_records_are_rejected(tmp_path):
    _write(tmp_path, "train.jsonl", [GOOD_GSM])
    _write(tmp_path, "test.jsonl", [GOOD_GSM])
    with pytest.raises(BenchmarkDataError, match="duplicate record"):
        get_benchmark("gsm8k").load_records("local", str(tmp_path))


def _mmlu(**changes) -> str:
    row = {"question_id": 1, "question": "Q?", "options": ["a", "b", "c", "d"], "answer": "B",
           "answer_index": 1, "cot_content": "", "category": "math", "src": "x"}  # fmt: skip
    row.update(changes)
    return json.dumps({k: v for k, v in row.items() if v is not None})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (_mmlu(question_id="2"), "line 2: field 'question_id' must be an integer"),
        (_mmlu(question_id=2, answer="E"), "line 2: field 'answer' must be a letter A-D"),
        (_mmlu(question_id=2, options=["only"]), "line 2: field 'options' must hold 2 to 10 options"),
        (_mmlu(question_id=2, options="a,b"), "line 2: field 'options' must be a list of strings"),
        (_mmlu(question_id=2, category=None), "line 2: missing field 'category'"),
    ],
)
def test_malformed_mmlu_pro(tmp_path, bad_line, message):
    path = _write(tmp_path, "test.jsonl", [_mmlu(), bad_line])
    with pytest.raises(BenchmarkDataError, match=message):
        get_benchmark("mmlu_pro").load_records("local", str(path))


def test_malformed_gsm_plus_answer(tmp_path):
    row = {"question": "Q?", "solution": "#### x", "answer": "lots", "perturbation_type": "digit expansion"}
    _write(tmp_path, "gsmplus_testmini.jsonl", [json.dumps(row)])
    with pytest.raises(BenchmarkDataError, match="line 1: field 'answer' is neither a number nor 'None'"):
        get_benchmark("gsm_plus").load_records("local", str(tmp_path))


def test_malformed_alpaca_eval_json_array_reports_element_line(tmp_path):
    good = {"dataset": "x", "instruction": "Say hi.", "output": "Hi!", "generator": "g"}
    bad = {"dataset": "x", "instruction": ["not", "text"], "output": "Hi!"}
    path = tmp_path / "alpaca_eval_gpt4_baseline.json"
    path.write_text(json.dumps([good, bad], indent=2))
    expected_line = json.dumps([good, bad], indent=2).split("\n").index("  {", 2) + 1
    with pytest.raises(
        BenchmarkDataError, match=rf"line {expected_line}: field 'instruction' must be a string"
    ):
        get_benchmark("alpaca_eval").load_records("local", str(tmp_path))
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]')
    with pytest.raises(BenchmarkDataError, match="line 3: invalid JSON"):
        get_benchmark("alpaca_eval").load_records("local", str(path))


def test_unknown_benchmark():
    with pytest.raises(KeyError, match="unknown benchmark 'gsm9k'"):
        get_benchmark("gsm9k")
