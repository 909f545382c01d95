"""Ready-made progress callbacks for ``Generator.generate``: log lines (Dagster run log) and a terminal bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rd_pipeline.generation.base import GenerationStats, ProgressCallback


def describe_progress(label: str, done: int, total: int, stats: GenerationStats, seconds: float) -> str:
    """One line: samples done of total, how many came from the journal, tokens, cost, and the generation rate."""
    rate = stats.samples_generated / seconds if seconds > 0 else 0.0
    line = (
        f"{label}: {done}/{total} samples ({stats.samples_from_journal} from journal, "
        f"{stats.samples_generated} generated), {stats.input_tokens} input / {stats.output_tokens} output tokens"
    )
    if stats.cost_usd:
        line += f", ${stats.cost_usd:.4f}"
    if stats.samples_generated:
        line += f", {rate:.2f} samples/s"
    if stats.budget_exhausted:
        line += ", budget exhausted"
    return line


def log_progress(
    log: Callable[[str], None],
    label: str,
    min_interval_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> ProgressCallback:
    """A callback that sends a progress line to ``log`` at most every ``min_interval_s``, and always at the end."""
    started = clock()
    last = [float("-inf")]

    def report(done: int, total: int, stats: GenerationStats) -> None:
        now = clock()
        if done >= total or now - last[0] >= min_interval_s:
            last[0] = now
            log(describe_progress(label, done, total, stats, now - started))

    return report


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressCallback]:
    """A tqdm bar over samples, showing tokens and cost, closed when the block ends."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="sample")

    def report(done: int, total: int, stats: GenerationStats) -> None:
        bar.total = total
        bar.n = done
        postfix = {"journal": stats.samples_from_journal, "tokens": stats.input_tokens + stats.output_tokens}
        if stats.cost_usd:
            postfix["usd"] = round(stats.cost_usd, 4)
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    try:
        yield report
    finally:
        bar.close()
