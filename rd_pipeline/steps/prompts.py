"""benchmark_prompts: each benchmark's train and eval items, normalized, with the prompt sent to models."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rd_pipeline.benchmarks import BenchmarkItem, get_benchmark, select_prompts
from rd_pipeline.config import PipelineConfig
from rd_pipeline.steps.check_registry import AssetCheck, CheckDetails, not_empty
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepResult, content_hash
from rd_pipeline.steps.results import BenchmarkPrompts


def item_to_row(item: BenchmarkItem, data_version: str = "") -> dict[str, Any]:
    return {
        "benchmark": item.benchmark,
        "prompt_id": item.item_id,
        "split": item.split,
        "question": item.question,
        "prompt": get_benchmark(item.benchmark).user_prompt(item),
        "gold": item.gold,
        "reference": item.reference,
        "meta": json.dumps({"meta": item.meta, "options": list(item.options)}, sort_keys=True),
        "data_version": data_version,
    }


def row_to_item(row: dict[str, Any]) -> BenchmarkItem:
    extra = json.loads(row["meta"] or "{}")
    return BenchmarkItem(
        benchmark=row["benchmark"],
        item_id=row["prompt_id"],
        split=row["split"],
        question=row["question"],
        gold=row["gold"],
        reference=row["reference"],
        options=tuple(extra.get("options", ())),
        meta=extra.get("meta", {}),
    )


def read_prompts(ctx: StepContext, benchmark: str, split: str) -> list[dict[str, Any]]:
    """The stored prompts of one benchmark split, in a stable order; a clear error if there are none."""
    rows = ctx.store.read("benchmark_prompts", benchmark, split=split, order_by="prompt_id")
    if not rows and split == "train" and ctx.config.benchmark(benchmark).train_size == 0:
        return []
    if not rows:
        raise RuntimeError(
            f"benchmark_prompts[{benchmark}] has no {split} prompts; materialize benchmark_prompts first"
        )
    return rows


def _no_eval_overlap(result: BenchmarkPrompts, _: PipelineConfig) -> CheckDetails:
    overlaps = result.train_eval_overlaps
    found = {name: count for name, count in (overlaps or {}).items() if count}
    return overlaps is not None and not found, {
        "overlapping_train_prompts": sum(found.values()) if overlaps is not None else None,
        "overlaps": ", ".join(f"{name}: {count}" for name, count in sorted(found.items())) or "none",
        "dropped_from_train": result.train_dropped_as_eval,
    }


BENCHMARK_PROMPTS_CHECKS = (
    AssetCheck("not_empty", True, "the partition has prompts", not_empty, always_blocking=True),
    AssetCheck(
        "no_eval_overlap",
        True,
        "no train prompt (or GSM-Plus seed question) is an eval question of a configured benchmark or a "
        "GSM8K test question",
        _no_eval_overlap,
    ),
)


@committed("benchmark_prompts", checks=BENCHMARK_PROMPTS_CHECKS)
def make_benchmark_prompts(ctx: StepContext, benchmark: str) -> StepResult:
    cfg = ctx.config.benchmark(benchmark)
    selection = select_prompts(ctx.config, benchmark)
    rows = [item_to_row(item) for item in selection.items]
    data_version = content_hash([{k: v for k, v in row.items() if k != "data_version"} for row in rows])
    for row in rows:
        row["data_version"] = data_version
    ctx.stage("benchmark_prompts", benchmark, rows)
    ctx.record_version("benchmark_prompts", benchmark, data_version)
    splits = Counter(row["split"] for row in rows)
    ctx.log(
        f"benchmark_prompts[{benchmark}]: {splits['train']} train + {splits['eval']} eval from {cfg.source}; "
        f"{selection.dropped_from_train} train records left out as eval questions"
    )
    return StepResult.of(
        data_version,
        BenchmarkPrompts(
            rows=len(rows),
            train_prompts=splits["train"],
            eval_prompts=splits["eval"],
            train_dropped_as_eval=selection.dropped_from_train,
            train_eval_overlaps=selection.overlaps,
            details={
                "source": cfg.source + (f" ({cfg.path})" if cfg.path else ""),
                "train_available": selection.train_available,
                "eval_available": selection.eval_available,
            },
        ),
    )
