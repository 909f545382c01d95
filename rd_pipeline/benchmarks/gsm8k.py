"""GSM8K: grade-school math word problems; the gold answer is the number after ``####``."""

from __future__ import annotations

import re

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, DataPart, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.extraction import extract_number, numbers_equal
from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.benchmarks.records import Record, field_str, short_hash
from rd_pipeline.benchmarks.splits import hash_split

_GOLD_LINE = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$", re.MULTILINE)


def gold_from_solution(solution: str) -> str | None:
    """The number on the solution's last ``#### N`` line, commas removed."""
    found = _GOLD_LINE.findall(solution)
    return found[-1].replace(",", "") if found else None


class Gsm8k(Benchmark):
    traits = BENCHMARK_TRAITS["gsm8k"]
    parts = (
        DataPart("train.jsonl", "gsm8k_train_sample.jsonl", "train", "train"),
        DataPart("test.jsonl", "gsm8k_test_sample.jsonl", "test", "eval"),
    )
    hub_id, hub_config = "openai/gsm8k", "main"

    def parse_record(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
        line, row = record
        question = field_str(row, "question", source, line)
        answer = field_str(row, "answer", source, line)
        gold = gold_from_solution(answer)
        if gold is None:
            raise BenchmarkDataError(source, line, "field 'answer' has no '#### <number>' line")
        item_id = short_hash(question)
        return BenchmarkItem(
            benchmark=self.name,
            item_id=item_id,
            split=split or hash_split(self.name, item_id),
            question=question,
            gold=gold,
        )

    def user_prompt(self, item: BenchmarkItem) -> str:
        return math_prompt(item.question)

    def extract_answer(self, item: BenchmarkItem, response: str) -> str | None:
        return extract_number(response)

    def answers_equal(self, a: str, b: str) -> bool:
        return numbers_equal(a, b)
