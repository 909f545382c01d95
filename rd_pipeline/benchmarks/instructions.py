"""Open-ended training instructions: a local file, a hub dataset, or the built-in sample; never AlpacaEval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rd_pipeline.benchmarks.base import BenchmarkItem
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.hub import hub_source, read_hub
from rd_pipeline.benchmarks.leaks import normalize_text
from rd_pipeline.benchmarks.records import Record, field_str, read_json_array, read_jsonl, short_hash
from rd_pipeline.benchmarks.sources import SAMPLES
from rd_pipeline.benchmarks.splits import check_unique

if TYPE_CHECKING:
    from rd_pipeline.config import InstructionSourceConfig

SAMPLE_FILE = "instructions_sample.jsonl"  # written for this project; disjoint from AlpacaEval
OPEN_ENDED_BENCHMARK = "alpaca_eval"
# An instruction source sharing more than this share of its instructions with AlpacaEval is AlpacaEval itself.
MAX_EVAL_SHARE = 0.5


def instruction_source_name(cfg: InstructionSourceConfig) -> str:
    """Where the instructions come from, as named in error messages."""
    if cfg.source == "builtin":
        return str(SAMPLES / SAMPLE_FILE)
    if cfg.source == "local":
        return str(cfg.path)
    return hub_source(str(cfg.hub_id), cfg.hub_config, cfg.hub_split)


def _records(cfg: InstructionSourceConfig) -> Iterator[Record]:
    if cfg.source == "hub":
        return read_hub(str(cfg.hub_id), cfg.hub_config, cfg.hub_split)
    file = SAMPLES / SAMPLE_FILE if cfg.source == "builtin" else Path(str(cfg.path))
    return read_jsonl(file) if file.suffix == ".jsonl" else read_json_array(file)


def load_instructions(
    cfg: InstructionSourceConfig, benchmark: str = OPEN_ENDED_BENCHMARK
) -> list[BenchmarkItem]:
    """Every instruction of the source as a train item of ``benchmark``; errors name the file, line and field."""
    where = instruction_source_name(cfg)
    items = []
    for line, row in _records(cfg):
        instruction = field_str(row, cfg.instruction_field, where, line)
        if cfg.input_field is not None:
            extra = field_str(row, cfg.input_field, where, line, allow_empty=True).strip()
            instruction = f"{instruction.rstrip()}\n\n{extra}" if extra else instruction
        category = row.get("category")
        items.append(
            BenchmarkItem(
                benchmark=benchmark,
                item_id=short_hash(instruction),
                split="train",
                question=instruction,
                meta={"category": category} if isinstance(category, str) and category else {},
            )
        )
    check_unique(items, where)
    return items


def refuse_evaluation_copy(
    instructions: list[BenchmarkItem], evaluation: list[BenchmarkItem], cfg: InstructionSourceConfig
) -> None:
    """Fail if the instruction source is (mostly) the evaluation set itself under another name."""
    eval_texts = {normalize_text(item.question) for item in evaluation}
    shared = sum(normalize_text(item.question) in eval_texts for item in instructions)
    if instructions and shared / len(instructions) > MAX_EVAL_SHARE:
        raise BenchmarkDataError(
            instruction_source_name(cfg),
            None,
            f"{shared} of its {len(instructions)} instructions are AlpacaEval instructions: the instruction "
            "source must not be AlpacaEval, which is evaluation data only",
        )
