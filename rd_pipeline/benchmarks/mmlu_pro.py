"""MMLU-Pro: multiple choice with up to ten options, lettered A-J; ``answer`` (the letter) is the gold."""

from __future__ import annotations

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, DataPart, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.extraction import LETTERS, choices_equal, extract_choice
from rd_pipeline.benchmarks.records import Record, field_int, field_str, field_str_list
from rd_pipeline.benchmarks.splits import hash_split


class MmluPro(Benchmark):
    traits = BENCHMARK_TRAITS["mmlu_pro"]
    parts = (DataPart("test.jsonl", "mmlu_pro_sample.jsonl", "test"),)
    hub_id = "TIGER-Lab/MMLU-Pro"
    breakdown_field = "category"
    n_options = len(LETTERS)

    def parse_record(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
        line, row = record
        question_id = field_int(row, "question_id", source, line)
        question = field_str(row, "question", source, line)
        options = field_str_list(row, "options", source, line)
        while options and options[-1].strip() == "N/A":
            options = options[:-1]
        if not 2 <= len(options) <= self.n_options:
            message = f"field 'options' must hold 2 to {self.n_options} options, got {len(options)}"
            raise BenchmarkDataError(source, line, message)
        answer = field_str(row, "answer", source, line).strip()
        if len(answer) != 1 or answer not in LETTERS[: len(options)]:
            raise BenchmarkDataError(
                source, line, f"field 'answer' must be a letter A-{LETTERS[len(options) - 1]}, got {answer!r}"
            )
        category = field_str(row, "category", source, line)
        return BenchmarkItem(
            benchmark=self.name,
            item_id=str(question_id),
            split=hash_split(self.name, str(question_id)),
            question=question,
            gold=answer,
            options=tuple(options),
            meta={"category": category},
        )

    def user_prompt(self, item: BenchmarkItem) -> str:
        category = item.meta.get("category", "general knowledge")
        options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(item.options))
        return (
            f"The following is a multiple choice question about {category}. Think step by step and then "
            'finish your answer with "The answer is (X)." where X is the correct letter choice.\n\n'
            f"Question: {item.question.strip()}\nOptions:\n{options}"
        )

    def extract_answer(self, item: BenchmarkItem, response: str) -> str | None:
        """The chosen letter; in the last-letter fallback only letters of the item's own options count."""
        return extract_choice(response, len(item.options))

    def answers_equal(self, a: str, b: str) -> bool:
        return choices_equal(a, b)
