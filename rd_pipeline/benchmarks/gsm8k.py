"""GSM8K: grade-school math word problems; the gold answer is the number after ``####``."""

from __future__ import annotations

import re
from pathlib import Path

from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.extraction import extract_number, numbers_equal
from rd_pipeline.benchmarks.hub import hub_source, read_hub
from rd_pipeline.benchmarks.math_prompt import math_prompt
from rd_pipeline.benchmarks.records import Record, field_str, read_jsonl, short_hash
from rd_pipeline.benchmarks.sources import SAMPLES
from rd_pipeline.benchmarks.splits import check_unique, hash_split

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
_GOLD_LINE = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$", re.MULTILINE)


def gold_from_solution(solution: str) -> str | None:
    """The number on the solution's last ``#### N`` line, commas removed."""
    found = _GOLD_LINE.findall(solution)
    return found[-1].replace(",", "") if found else None


class Gsm8k(Benchmark):
    name = "gsm8k"
    verifiable = True

    def load_records(self, source: str, path: str | None) -> list[BenchmarkItem]:
        if source == "builtin":
            return self._load_split_files(
                SAMPLES / "gsm8k_train_sample.jsonl", SAMPLES / "gsm8k_test_sample.jsonl"
            )
        if source == "local":
            if path is None:
                raise ValueError("gsm8k: source 'local' needs a path")
            root = Path(path)
            if root.is_dir():
                return self._load_split_files(root / "train.jsonl", root / "test.jsonl")
            items = [self._item(rec, str(root), None) for rec in read_jsonl(root)]
            check_unique(items, str(root))
            return items
        if source == "hub":
            items = []
            for hub_split, split in (("train", "train"), ("test", "eval")):
                where = hub_source(HUB_ID, HUB_CONFIG, hub_split)
                items += [self._item(rec, where, split) for rec in read_hub(HUB_ID, HUB_CONFIG, hub_split)]
            check_unique(items, hub_source(HUB_ID, HUB_CONFIG, "train+test"))
            return items
        raise ValueError(f"gsm8k: unknown source {source!r}")

    def _load_split_files(self, train: Path, test: Path) -> list[BenchmarkItem]:
        items = [self._item(rec, str(train), "train") for rec in read_jsonl(train)]
        items += [self._item(rec, str(test), "eval") for rec in read_jsonl(test)]
        check_unique(items, f"{train} + {test}")
        return items

    def _item(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
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

    def extract_answer(self, response: str) -> str | None:
        return extract_number(response)

    def answers_equal(self, a: str, b: str) -> bool:
        return numbers_equal(a, b)
