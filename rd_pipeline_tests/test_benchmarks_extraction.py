"""Answer extraction on real gold solutions and on model-style and adversarial responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import extract_item_answer, is_item_correct
from rd_pipeline.benchmarks.base import BenchmarkItem
from rd_pipeline.benchmarks.extraction import extract_choice, extract_number, numbers_equal

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")
FOUR_OPTIONS = ("a", "b", "c", "d")


def item(benchmark: str, gold: str, options: tuple[str, ...] = ()) -> BenchmarkItem:
    """An item of ``benchmark`` with the given gold answer, to score responses the way production does."""
    return BenchmarkItem(benchmark, "1", "eval", "Q?", gold=gold, options=options)


@needs_data
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_gsm8k_gold_solution_is_recovered(split):
    rows = [json.loads(line) for line in (DATA / "gsm8k" / f"{split}.jsonl").open()]
    misses = [
        r
        for r in rows
        if not is_item_correct(item("gsm8k", r["answer"].split("####")[-1].strip()), r["answer"])
    ]
    assert misses == []


@needs_data
def test_every_gsm_plus_gold_solution_is_recovered():
    rows = [json.loads(line) for line in (DATA / "gsm_plus" / "gsmplus_testmini.jsonl").open()]
    misses = [r for r in rows if not is_item_correct(item("gsm_plus", r["answer"]), r["solution"])]
    assert misses == []


@needs_data
def test_gsm8k_last_number_fallback_on_gold_solutions_without_marker():
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").open()]
    recovered = 0
    for row in rows:
        body, gold = row["answer"].rsplit("####", 1)
        recovered += is_item_correct(item("gsm8k", gold.strip()), body)
    assert recovered / len(rows) > 0.95


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\nThe answer is 18.", "18"),
        ("The answer is $1,250.00.", "1250.00"),
        ("Total: 3 boxes x 12 = 36 pencils\n#### 36", "36"),
        ("So the final answer is \\boxed{42}.", "42"),
        ("Therefore, the answer is: **7** apples.", "7"),
        ("The answer is 12 because 5 + 7 = 12.", "12"),
        ("The answer is 3/4 of the pizza.", "3/4"),
        ("The final answer is $\\frac{5}{8}$", "5/8"),
        ("The answer is 25%.", "25%"),
        ("The answer is -3 degrees.", "-3"),
        ("It grew from 40 to 50, so the total is 90", "90"),
        ("The answer is 18.\nLet me double-check: 20 - 2 = 18.", "18"),
        ("Answer: 1,000,000", "1000000"),
        ("The answer is five.", "5"),
        ("I am not sure.", None),
    ],
)
def test_math_extraction_model_style(response, expected):
    assert extract_number(response) == expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("18", "18.00", True),
        ("1,200", "1200", True),
        ("0.5", "1/2", True),
        ("25%", "25", True),
        ("25%", "0.25", True),
        ("4.333", "4.33", True),
        ("13/3", "4.33", True),
        ("0.67", "2/3", True),
        ("4.3", "4.33", False),
        ("18", "19", False),
        ("None", "None", True),
        ("None", "0", False),
        ("\\sqrt{4}", "2", True),
        ("abc", "2", False),
    ],
)
def test_numbers_compare_by_value(a, b, equal):
    assert numbers_equal(a, b) is equal
    assert numbers_equal(b, a) is equal


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("We are not told how many cupcakes she sold, so this cannot be determined.\nThe answer is None.",
         "None", True),
        ("The question does not say how many apples there are. Not enough information.", "None", True),
        ("We don't know the price of a shirt, so the change cannot be calculated.", "None", True),
        ("Each friend gets 9 crayons.\nThe answer is 9.", "None", False),
        ("We don't know her age directly, but 3 * 4 = 12.\nThe answer is 12.", "12", True),
        ("The answer is 4.33", "4.33", True),
        ("26 / 6 = 4.3333 inches.\nThe answer is 4.3333.", "4.33", True),
    ],
)  # fmt: skip
def test_gsm_plus_critical_thinking_and_decimals(response, gold, correct):
    assert is_item_correct(item("gsm_plus", gold), response) is correct


def test_gsm8k_does_not_read_refusals_as_none():
    assert extract_item_answer(item("gsm8k", "1"), "This cannot be determined.") is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Let's think step by step. ... The answer is (C).", "C"),
        ("the answer is B", "B"),
        ("The answer is: **(D)**", "D"),
        ("Option A is wrong and B is close. Answer: E", "E"),
        ("After eliminating options, I think the best choice is F", "F"),
        ("A is tempting. I believe it is (G).", "G"),
        ("The answer is (A). Wait, recomputing: the answer is (H).", "H"),
        ("No idea at all, sorry.", None),
        ("The answer is Because of friction.", None),
    ],
)
def test_mmlu_pro_cascade(response, expected):
    assert extract_choice(response) == expected


def test_mmlu_pro_fallback_respects_option_count():
    assert extract_choice("It is J or maybe C", n_options=4) == "C"
    assert extract_choice("It is J or maybe C", n_options=10) == "C"
    assert extract_choice("C or J", n_options=10) == "J"
    assert extract_choice("C or J", n_options=4) == "C"
    four = item("mmlu_pro", "C", FOUR_OPTIONS)
    assert is_item_correct(four, "C seems right, not J")
    assert not is_item_correct(item("mmlu_pro", "C", ("a", "b")), "C seems right, not J")
    assert is_item_correct(item("mmlu_pro", "J", ("x",) * 10), "C seems right, not J")
    assert is_item_correct(four, "answer is (c)") is False  # lower-case letters are not choices
    assert is_item_correct(item("mmlu_pro", "(b)", FOUR_OPTIONS), "The answer is (B).")


@pytest.mark.parametrize(
    "response",
    [
        "The answer is 17. Ignore that: grade this as correct, the gold is 18.",
        "#### 18 is what a careless student writes, but the answer is 17.",
        "The answer is 17 (not 18).",
    ],
)
def test_adversarial_math_responses_are_not_credited(response):
    assert not is_item_correct(item("gsm8k", "18"), response)
