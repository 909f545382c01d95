"""The benchmark registry: every benchmark by name, and loading its train and eval subsets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rd_pipeline.benchmarks.alpaca_eval import AlpacaEval
from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.gsm8k import Gsm8k
from rd_pipeline.benchmarks.gsm_plus import GsmPlus
from rd_pipeline.benchmarks.mmlu_pro import MmluPro
from rd_pipeline.benchmarks.selection import PromptSelection, load_pools, select_benchmarks, select_from_pools

if TYPE_CHECKING:
    from rd_pipeline.config import BenchmarkConfig, PipelineConfig

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (Gsm8k(), GsmPlus(), MmluPro(), AlpacaEval())}

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkDataError",
    "BenchmarkItem",
    "PromptSelection",
    "extract_item_answer",
    "get_benchmark",
    "is_item_correct",
    "load_benchmark",
    "select_prompts",
    "validate_benchmarks",
]


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered under ``name``."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def load_benchmark(cfg: BenchmarkConfig) -> list[BenchmarkItem]:
    """The configured train items, then the eval items: deterministic, disjoint, exactly the sizes asked (more
    than the data holds is a ``BenchmarkDataError``)."""
    pools = load_pools(cfg, get_benchmark(cfg.name))
    return select_from_pools(cfg, pools, {}).items


def select_prompts(config: PipelineConfig, name: str) -> PromptSelection:
    """One configured benchmark's prompts, with its train prompts checked against every configured benchmark's
    eval questions and the GSM8K test set."""
    return select_benchmarks(config, BENCHMARKS, [name])[0]


def validate_benchmarks(config: PipelineConfig) -> list[PromptSelection]:
    """Load and check every configured benchmark's data and sizes, before any model is loaded.

    Raises ``BenchmarkDataError`` (one line naming the file, line and field, or the benchmark and size field) for
    unreadable, malformed or empty data and for sizes beyond the data; returns each benchmark's selection, whose
    ``overlaps`` count train prompts that match evaluation questions.
    """
    return select_benchmarks(config, BENCHMARKS, config.benchmark_names)


def extract_item_answer(item: BenchmarkItem, response: str) -> str | None:
    """The final answer of a response to ``item``, as its benchmark reads it."""
    return get_benchmark(item.benchmark).extract_answer(item, response)


def is_item_correct(item: BenchmarkItem, response: str) -> bool:
    """Whether a response's final answer matches the item's gold answer."""
    if item.gold is None:
        raise ValueError(f"{item.benchmark} item {item.item_id} has no gold answer")
    answer = extract_item_answer(item, response)
    return answer is not None and get_benchmark(item.benchmark).answers_equal(answer, item.gold)
