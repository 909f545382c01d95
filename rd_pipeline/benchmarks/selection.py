"""Choosing each benchmark's train and eval prompts: evaluation data never feeds training.

A benchmark's *pools* are every record it could use, by split: an evaluation-only benchmark has only an eval pool,
the open-ended benchmark's train pool is its instruction source, and train records whose text (or GSM-Plus seed
question) is also an eval question of the same benchmark are left out. A *selection* takes the configured number
of prompts from each pool (more than a pool holds is an error) and counts, for every configured benchmark, the
selected train prompts that match one of its eval questions, and the GSM8K test set even where gsm8k is not
configured (then as its built-in sample knows it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rd_pipeline.benchmarks.base import Benchmark, BenchmarkItem, Split
from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.instructions import (
    instruction_source_name,
    load_instructions,
    refuse_evaluation_copy,
)
from rd_pipeline.benchmarks.leaks import count_matches, drop_matching, question_texts
from rd_pipeline.benchmarks.records import unit_hash

if TYPE_CHECKING:
    from rd_pipeline.config import BenchmarkConfig, PipelineConfig

GSM8K = "gsm8k"


@dataclass(frozen=True)
class BenchmarkPools:
    """Every usable record of one configured benchmark, train and eval, each in a stable hash order."""

    benchmark: str
    train_source: str
    eval_source: str
    train: list[BenchmarkItem]
    eval: list[BenchmarkItem]
    dropped_from_train: int  # train records left out because their text is also an eval question


@dataclass(frozen=True)
class PromptSelection:
    """The prompts chosen for one benchmark, with what was left out and what still matches evaluation data."""

    benchmark: str
    items: list[BenchmarkItem]  # train items, then eval items
    train_available: int
    eval_available: int
    dropped_from_train: int
    overlaps: dict[str, int]  # benchmark -> selected train prompts matching one of its eval questions


def data_source_name(cfg: BenchmarkConfig) -> str:
    """Where a benchmark's own records come from, as named in error messages."""
    if cfg.source == "local":
        return str(cfg.path)
    return "the built-in sample" if cfg.source == "builtin" else "the hub dataset"


def _ordered(items: Sequence[BenchmarkItem]) -> list[BenchmarkItem]:
    return sorted(items, key=lambda item: (unit_hash(item.benchmark, "order", item.item_id), item.item_id))


def _as_split(items: Sequence[BenchmarkItem], split: Split) -> list[BenchmarkItem]:
    return [item if item.split == split else dataclasses.replace(item, split=split) for item in items]


def load_pools(cfg: BenchmarkConfig, benchmark: Benchmark) -> BenchmarkPools:
    """Load a benchmark's records (and, for the open-ended one, its instruction source) into pools."""
    records = benchmark.load_records(cfg.source, cfg.path)
    train_source = eval_source = data_source_name(cfg)
    if cfg.eval_only:
        train, evaluation = [], _as_split(records, "eval")
    elif not benchmark.verifiable:
        evaluation = _as_split(records, "eval")
        train = load_instructions(cfg.instruction_source, cfg.name) if cfg.train_size else []
        refuse_evaluation_copy(train, evaluation, cfg.instruction_source)
        train_source = instruction_source_name(cfg.instruction_source)
    else:
        train = [item for item in records if item.split == "train"]
        evaluation = [item for item in records if item.split == "eval"]
    train, dropped = drop_matching(train, question_texts(evaluation))
    return BenchmarkPools(cfg.name, train_source, eval_source, _ordered(train), _ordered(evaluation), dropped)


def _take(
    pool: Sequence[BenchmarkItem],
    size: int | str,
    field: str,
    cfg: BenchmarkConfig,
    where: str,
    note: str = "",
) -> list[BenchmarkItem]:
    """The first ``size`` items of ``pool`` (all for ``"all"``); more than it holds is an error."""
    if size == "all":
        return list(pool)
    assert isinstance(size, int)
    if size > len(pool):
        split = "train" if field == "train_size" else "eval"
        message = f"{field} {size} is more than the {len(pool)} {split} prompts available in {where}{note}"
        raise BenchmarkDataError(f"benchmarks.{cfg.name}", None, message)
    return list(pool[:size])


def select_from_pools(
    cfg: BenchmarkConfig, pools: BenchmarkPools, held_out: Mapping[str, frozenset[str]]
) -> PromptSelection:
    """The configured numbers of train and eval prompts, and the train prompts matching each held-out set."""
    dropped = pools.dropped_from_train
    note = f" ({dropped} more are also eval questions and left out)" if dropped else ""
    train = _take(pools.train, cfg.train_size, "train_size", cfg, pools.train_source, note)
    evaluation = _take(pools.eval, cfg.eval_size, "eval_size", cfg, pools.eval_source)
    return PromptSelection(
        benchmark=cfg.name,
        items=train + evaluation,
        train_available=len(pools.train),
        eval_available=len(pools.eval),
        dropped_from_train=pools.dropped_from_train,
        overlaps=count_matches(train, held_out),
    )


def held_out_questions(
    all_pools: Mapping[str, BenchmarkPools], gsm8k: Benchmark
) -> dict[str, frozenset[str]]:
    """Each configured benchmark's eval questions, and the GSM8K test questions where gsm8k is not configured."""
    held_out = {name: question_texts(pools.eval) for name, pools in all_pools.items()}
    if GSM8K not in held_out:
        test = [item for item in gsm8k.load_records("builtin", None) if item.split == "eval"]
        held_out[GSM8K] = question_texts(test)
    return held_out


def select_benchmarks(
    config: PipelineConfig, registry: Mapping[str, Benchmark], names: Sequence[str]
) -> list[PromptSelection]:
    """The selections of the named benchmarks, checked against the eval questions of every configured one."""
    all_pools = {cfg.name: load_pools(cfg, registry[cfg.name]) for cfg in config.benchmarks}
    held_out = held_out_questions(all_pools, registry[GSM8K])
    return [select_from_pools(config.benchmark(name), all_pools[name], held_out) for name in names]
