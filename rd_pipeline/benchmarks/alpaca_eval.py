"""AlpacaEval: open-ended instructions with a reference output (the gpt4_turbo baseline); judged.

Every AlpacaEval record is evaluation data; the benchmark's train prompts come from a separate instruction source
(``rd_pipeline.benchmarks.instructions``)."""

from __future__ import annotations

from collections.abc import Iterator

from rd_pipeline.benchmark_traits import BENCHMARK_TRAITS
from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, DataPart, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.hub import read_hub, read_hub_json
from rd_pipeline.benchmarks.records import Record, field_str, short_hash


class AlpacaEval(Benchmark):
    traits = BENCHMARK_TRAITS["alpaca_eval"]
    # The sample was written for this project, in the same format.
    parts = (DataPart("alpaca_eval_gpt4_baseline.json", "alpaca_eval_sample.json", "eval"),)
    file_format = "json"
    hub_id, hub_config = "tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline"

    def read_hub_split(self, hub_split: str) -> Iterator[Record]:
        """The hub config through its loader; where the hub refuses loader scripts, the JSON file it serves."""
        try:
            rows = list(read_hub(self.hub_id, self.hub_config, hub_split))
        except BenchmarkDataError:
            rows = list(read_hub_json(self.hub_id, self.parts[0].file_name))
        return iter(rows)

    def parse_record(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
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
