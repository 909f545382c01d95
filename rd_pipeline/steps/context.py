"""What every step needs: the config, the store, where state lives, a logger, and versions of its inputs."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rd_pipeline.config import PipelineConfig
from rd_pipeline.generation.base import GenerationStats
from rd_pipeline.store import Store

LogFn = Callable[[str], None]


def content_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serializable parts."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class StepResult:
    """What a step made: its data version and the metadata a user wants to see."""

    data_version: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    config: PipelineConfig
    run_id: str = "local"
    log: LogFn = field(default_factory=lambda: logging.getLogger("rd_pipeline").info)

    @property
    def rd_home(self) -> Path:
        return self.config.rd_home()

    @property
    def store(self) -> Store:
        return Store(self.rd_home / "rd.duckdb")

    def record_version(
        self,
        asset: str,
        benchmark: str,
        data_version: str,
        teacher_version: str = "",
        upstream: dict[str, Any] | None = None,
    ) -> None:
        """Remember which run made which version of an asset partition (for lineage and downstream versions)."""
        self.store.append(
            "asset_versions",
            [
                {
                    "benchmark": benchmark,
                    "asset": asset,
                    "data_version": data_version,
                    "run_id": self.run_id,
                    "teacher_version": teacher_version,
                    "upstream": json.dumps(upstream or {}, sort_keys=True),
                    "recorded_at": datetime.now(timezone.utc).replace(tzinfo=None),
                }
            ],
        )

    def upstream_version(self, asset: str, benchmark: str = "") -> dict[str, Any]:
        """The latest recorded version of an upstream partition; a clear error if it was never materialized."""
        record = self.store.latest_version(asset, benchmark)
        if record is None:
            where = f"{asset}[{benchmark}]" if benchmark else asset
            raise RuntimeError(f"{where} has not been materialized yet; materialize it first")
        return record

    def progress(self, label: str, total: int) -> GenerationProgress:
        return GenerationProgress(label, total, self.log)


class GenerationProgress:
    """Progress of a long generation: a terminal bar when attached to a TTY, and log lines at most every 10 s."""

    def __init__(self, label: str, total: int, log: LogFn, interval_s: float = 10.0) -> None:
        from tqdm import tqdm

        self.label, self.total, self.log, self.interval_s = label, total, log, interval_s
        self._last_log = 0.0
        self._bar = tqdm(total=total, desc=label, unit="sample", disable=not sys.stderr.isatty(), leave=False)

    def __call__(self, done: int, total: int, stats: GenerationStats) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix(tokens=stats.output_tokens, cost=f"${stats.cost_usd:.4f}", refresh=False)
        self._bar.refresh()
        now = time.monotonic()
        if done >= total or now - self._last_log >= self.interval_s:
            self._last_log = now
            self.log(
                f"{self.label}: {done}/{total} samples ({stats.samples_generated} generated, "
                f"{stats.samples_from_journal} from journal), {stats.input_tokens} input + {stats.output_tokens} "
                f"output tokens, ${stats.cost_usd:.4f}"
            )

    def close(self) -> None:
        self._bar.close()


def lineage_ref(record: dict[str, Any]) -> dict[str, str]:
    """The part of an upstream version record that downstream lineage keeps."""
    return {
        "data_version": record["data_version"],
        "run_id": record["run_id"],
        "teacher_version": record.get("teacher_version") or "",
    }
