"""AlpacaEval: open-ended instructions with a reference output (the gpt4_turbo baseline); judged.

Every AlpacaEval record is evaluation data; the benchmark's train prompts come from a separate instruction source
(``rd_pipeline.benchmarks.instructions``)."""

from __future__ import annotations

from collections.abc import Iterator

from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.hub import hub_source, read_hub, read_hub_json
from rd_pipeline.benchmarks.records import (
    Record,
    field_str,
    read_json_array,
    read_jsonl,
    resolve_file,
    short_hash,
)
from rd_pipeline.benchmarks.sources import SAMPLES
from rd_pipeline.benchmarks.splits import check_unique

FILE_NAME = "alpaca_eval_gpt4_baseline.json"
SAMPLE_FILE = "alpaca_eval_sample.json"  # written for this project, in the same format
HUB_ID, HUB_CONFIG, HUB_SPLIT = "tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline", "eval"


class AlpacaEval(Benchmark):
    name = "alpaca_eval"
    verifiable = False

    def load_records(self, source: str, path: str | None) -> list[BenchmarkItem]:
        if source == "builtin":
            file = SAMPLES / SAMPLE_FILE
            records, where = read_json_array(file), str(file)
        elif source == "local":
            if path is None:
                raise ValueError("alpaca_eval: source 'local' needs a path")
            file = resolve_file(path, FILE_NAME)
            reader = read_jsonl if file.suffix == ".jsonl" else read_json_array
            records, where = reader(file), str(file)
        elif source == "hub":
            records, where = _read_from_hub(), hub_source(HUB_ID, HUB_CONFIG, HUB_SPLIT)
        else:
            raise ValueError(f"alpaca_eval: unknown source {source!r}")
        items = [self._item(record, where) for record in records]
        check_unique(items, where)
        return items

    def _item(self, record: Record, source: str) -> BenchmarkItem:
        line, row = record
        instruction = field_str(row, "instruction", source, line)
        output = field_str(row, "output", source, line, allow_empty=True)
        meta = {}
        for key in ("dataset", "generator"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise BenchmarkDataError(source, line, f"field '{key}' must be a string")
            if value:
                meta[key] = value
        item_id = short_hash(instruction)
        return BenchmarkItem(
            benchmark=self.name,
            item_id=item_id,
            split="eval",
            question=instruction,
            reference=output,
            meta=meta,
        )

    def user_prompt(self, item: BenchmarkItem) -> str:
        return item.question


def _read_from_hub() -> Iterator[Record]:
    """The hub config through its loader; where the hub refuses loader scripts, the JSON file it serves."""
    try:
        rows = list(read_hub(HUB_ID, HUB_CONFIG, HUB_SPLIT))
    except BenchmarkDataError:
        rows = list(read_hub_json(HUB_ID, FILE_NAME))
    return iter(rows)
