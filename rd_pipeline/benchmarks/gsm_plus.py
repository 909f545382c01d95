"""GSM-Plus: GSM8K questions under eight perturbations; "critical thinking" items have no answer ("None")."""

from __future__ import annotations

from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.extraction import NONE_ANSWER, extract_number, is_number, numbers_equal
from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.benchmarks.records import Record, field_str, short_hash
from rd_pipeline.benchmarks.sources import read_jsonl_source
from rd_pipeline.benchmarks.splits import check_unique, hash_split

FILE_NAME = "gsmplus_testmini.jsonl"
SAMPLE_FILE = "gsm_plus_sample.jsonl"  # written for this project, in the same format
HUB_ID, HUB_SPLIT = "qintongli/GSM-Plus", "testmini"
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

    name = "gsm_plus"
    verifiable = True
    eval_only = True

    def load_records(self, source: str, path: str | None) -> list[BenchmarkItem]:
        records, where = read_jsonl_source(
            self.name,
            source,
            path,
            file_name=FILE_NAME,
            sample_file=SAMPLE_FILE,
            hub_id=HUB_ID,
            hub_split=HUB_SPLIT,
        )
        items = [self._item(record, where) for record in records]
        check_unique(items, where)
        return items

    def _item(self, record: Record, source: str) -> BenchmarkItem:
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

    def extract_answer(self, response: str) -> str | None:
        return extract_number(response, allow_none=True)

    def answers_equal(self, a: str, b: str) -> bool:
        return numbers_equal(a, b)
