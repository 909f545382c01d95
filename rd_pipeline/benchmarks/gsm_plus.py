"""GSM-Plus: GSM8K questions under eight perturbations; "critical thinking" items have no answer ("None")."""

from __future__ import annotations

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, DataPart, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.extraction import NONE_ANSWER, extract_number, is_number, numbers_equal
from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.benchmarks.records import Record, field_str, short_hash
from rd_pipeline.benchmarks.splits import hash_split

PERTURBATION_TYPES = (
    "numerical substitution",
    "digit expansion",
    "integer-decimal-fraction conversion",
    "adding operation",
    "reversing operation",
    "problem understanding",
    "distraction insertion",
    "critical thinking",
)


class GsmPlus(Benchmark):
    """Evaluation-only: every item perturbs a GSM8K test question (its seed). Where a config opts in to training,
    train and eval are carved by a hash of the seed question, so all variants of a seed share a side."""

    traits = BENCHMARK_TRAITS["gsm_plus"]
    # The sample was written for this project, in the same format.
    parts = (DataPart("gsmplus_testmini.jsonl", "gsm_plus_sample.jsonl", "testmini"),)
    hub_id = "qintongli/GSM-Plus"
    breakdown_field = "perturbation_type"

    def parse_record(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
        line, row = record
        question = field_str(row, "question", source, line)
        answer = field_str(row, "answer", source, line).strip()
        perturbation = field_str(row, "perturbation_type", source, line)
        seed_question = row.get("seed_question") or question
        if not isinstance(seed_question, str):
            raise BenchmarkDataError(source, line, "field 'seed_question' must be a string")
        if answer != NONE_ANSWER and not is_number(answer):
            message = f"field 'answer' is neither a number nor 'None': {answer!r}"
            raise BenchmarkDataError(source, line, message)
        return BenchmarkItem(
            benchmark=self.name,
            item_id=short_hash(question, perturbation),
            split=hash_split(self.name, seed_question.strip()),
            question=question,
            gold=answer,
            meta={"perturbation_type": perturbation, "seed_question": seed_question},
        )

    def user_prompt(self, item: BenchmarkItem) -> str:
        return math_prompt(item.question, allow_none=True)

    def extract_answer(self, item: BenchmarkItem, response: str) -> str | None:
        return extract_number(response, allow_none=True)

    def answers_equal(self, a: str, b: str) -> bool:
        return numbers_equal(a, b)
