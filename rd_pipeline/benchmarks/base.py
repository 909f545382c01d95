"""What every benchmark provides: its declared data and traits, normalized items, a prompt, answer extraction.

Each benchmark declares what the rest of the pipeline needs to know about it (its files, hub dataset, whether
answers are verifiable, whether it is evaluation data only, the field its scores break down by); the loader, the
configuration and evaluation read those declarations instead of naming benchmarks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rd_pipeline.benchmark_traits import BenchmarkTraits
from rd_pipeline.benchmarks.hub import hub_source, read_hub
from rd_pipeline.benchmarks.records import Record, read_json_array, read_jsonl
from rd_pipeline.benchmarks.sources import SAMPLES
from rd_pipeline.benchmarks.splits import Split, check_unique

__all__ = ["Benchmark", "BenchmarkItem", "DataPart", "Split", "item_from_json", "item_to_json"]


@dataclass(frozen=True)
class BenchmarkItem:
    """One normalized benchmark record.

    ``gold`` is the gold final answer (a number string, an MMLU-Pro letter, ``"None"`` for GSM-Plus
    critical-thinking items) and is never used for training; ``reference`` is the AlpacaEval baseline output.
    """

    benchmark: str
    item_id: str
    split: Split
    question: str
    gold: str | None = None
    reference: str | None = None
    options: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


def item_to_json(item: BenchmarkItem) -> str:
    """The item as JSON (what a training job gets to extract and compare answers), without the reference."""
    return json.dumps(
        {
            "benchmark": item.benchmark,
            "item_id": item.item_id,
            "split": item.split,
            "question": item.question,
            "gold": item.gold,
            "options": list(item.options),
            "meta": item.meta,
        }
    )


def item_from_json(text: str) -> BenchmarkItem:
    """The item ``item_to_json`` wrote."""
    fields = json.loads(text)
    return BenchmarkItem(**{**fields, "options": tuple(fields.get("options", ()))})


@dataclass(frozen=True)
class DataPart:
    """One file of a benchmark's data, as each source names it."""

    file_name: str  # in a local directory
    sample_file: str  # the built-in sample, under benchmarks/samples
    hub_split: str  # the split of the hub dataset
    split: Split | None = None  # the split of every record in it; None: each record's split is derived


@dataclass(frozen=True)
class _SourcePart:
    records: Iterator[Record]
    where: str  # the file or hub split, as named in error messages
    split: Split | None


class Benchmark(ABC):
    """A benchmark: what and where its data is, how to prompt for it, and how to score answers to it."""

    traits: BenchmarkTraits  # name, verifiable, eval_only: what the configuration knows of it too
    parts: tuple[DataPart, ...]  # one part per split where the data comes split, else one
    # The files' format: JSON Lines, or one JSON array of objects (where a local file named .jsonl is JSON Lines).
    file_format: Literal["jsonl", "json"] = "jsonl"
    hub_id: str
    hub_config: str | None = None
    breakdown_field: str | None = None  # the ``meta`` field whose values eval scores are broken down by
    n_options: int = 0  # multiple choice: the most options an item may have; 0: answers are not choices

    @property
    def name(self) -> str:
        return self.traits.name

    @property
    def verifiable(self) -> bool:
        """Answers have a gold final answer to extract and compare; else open-ended and judged."""
        return self.traits.verifiable

    @property
    def eval_only(self) -> bool:
        """Evaluation data only: no train prompts unless a config explicitly opts in."""
        return self.traits.eval_only

    @property
    def file_names(self) -> tuple[str, ...]:
        """The file names a local directory holds the benchmark's data under."""
        return tuple(part.file_name for part in self.parts)

    def load_records(self, source: str, path: str | None) -> list[BenchmarkItem]:
        """Every record of the chosen source (``builtin``, ``local`` file or directory, or ``hub``), normalized;
        ``split`` is the split of the record's file or hub split where the data comes split."""
        parts, where = self._source_parts(source, path)
        items = [
            self.parse_record(record, part.where, part.split) for part in parts for record in part.records
        ]
        check_unique(items, where)
        return items

    def _source_parts(self, source: str, path: str | None) -> tuple[list[_SourcePart], str]:
        """The records of each part in the chosen source, and the whole source as error messages name it."""
        if source == "hub":
            parts = [
                _SourcePart(
                    self.read_hub_split(p.hub_split),
                    hub_source(self.hub_id, self.hub_config, p.hub_split),
                    p.split,
                )
                for p in self.parts
            ]
            splits = "+".join(p.hub_split for p in self.parts)
            return parts, hub_source(self.hub_id, self.hub_config, splits)
        if source == "builtin":
            files = [(SAMPLES / p.sample_file, p.split) for p in self.parts]
        elif source == "local":
            if path is None:
                raise ValueError(f"{self.name}: source 'local' needs a path")
            root = Path(path)
            files = [(root / p.file_name, p.split) for p in self.parts] if root.is_dir() else [(root, None)]
        else:
            raise ValueError(f"{self.name}: unknown source {source!r}")
        parts = [_SourcePart(self._read_file(file), str(file), split) for file, split in files]
        return parts, " + ".join(part.where for part in parts)

    def eval_sources(self, source: str, path: str | None) -> list[Path | str]:
        """Where the eval records of the chosen source come from: the files of the parts that hold them (an eval
        part, or one whose records are split later), or the hub splits by name."""
        parts = [p for p in self.parts if p.split in ("eval", None)]
        if source == "hub":
            return [hub_source(self.hub_id, self.hub_config, p.hub_split) for p in parts]
        if source == "builtin":
            return [SAMPLES / p.sample_file for p in parts]
        if path is None:
            raise ValueError(f"{self.name}: source 'local' needs a path")
        root = Path(path)
        return [root / p.file_name for p in parts] if root.is_dir() else [root]

    def _read_file(self, file: Path) -> Iterator[Record]:
        if self.file_format == "jsonl" or file.suffix == ".jsonl":
            return read_jsonl(file)
        return read_json_array(file)

    def read_hub_split(self, hub_split: str) -> Iterator[Record]:
        """The records of one split of the benchmark's hub dataset."""
        return read_hub(self.hub_id, self.hub_config, hub_split)

    @abstractmethod
    def parse_record(self, record: Record, source: str, split: Split | None) -> BenchmarkItem:
        """One record as an item; ``source`` names its file in errors, ``split`` is its file's split if known."""

    @abstractmethod
    def user_prompt(self, item: BenchmarkItem) -> str:
        """The user message sent to a model for this item."""

    def extract_answer(self, item: BenchmarkItem, response: str) -> str | None:
        """The final answer of a response to ``item``, or None if there is none."""
        raise NotImplementedError(f"{self.name} is open-ended: it has no extractable answer")

    def answers_equal(self, a: str, b: str) -> bool:
        """Whether two extracted answers are equivalent (by value, not as strings)."""
        raise NotImplementedError(f"{self.name} is open-ended: it has no extractable answer")
