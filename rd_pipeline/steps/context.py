"""What every step needs: the config, the store, where state lives, a logger, and versions of its inputs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rd_pipeline.config import PipelineConfig
from rd_pipeline.generation.base import GenerationStats, ProgressCallback
from rd_pipeline.generation.progress import log_progress, progress_bar
from rd_pipeline.hashing import short_hash
from rd_pipeline.steps.check_registry import CheckOutcome
from rd_pipeline.steps.results import StepOutput
from rd_pipeline.store import StagedWrites, Store, store_path

LogFn = Callable[[str], None]


def content_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serializable parts."""
    return short_hash(parts)


@dataclass
class StepResult:
    """What a step made: its data version, the metadata a user wants to see, and its evaluated checks. A step
    with checks also returns its typed result (``output``, see ``rd_pipeline.steps.results``), which the checks
    read; ``metadata`` is then ``output.to_metadata()``."""

    data_version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    output: StepOutput | None = None

    @classmethod
    def of(cls, data_version: str, output: StepOutput) -> StepResult:
        """The result of a step that made ``output``."""
        return cls(data_version, output.to_metadata(), output=output)

    @property
    def reported(self) -> StepOutput | dict[str, Any]:
        """What the checks read: the typed result, or the metadata of a step without one."""
        return self.output if self.output is not None else self.metadata


@dataclass
class StepContext:
    """Config, store and logger of one step. Inside a step (see ``rd_pipeline.steps.commit``) every table write is
    staged in ``staged`` and committed only after the step's checks pass; outside one, writes go straight to the
    store."""

    config: PipelineConfig
    run_id: str = "local"
    log: LogFn = field(default_factory=lambda: logging.getLogger("rd_pipeline").info)
    staged: StagedWrites | None = None
    # Runs a prepared training job (rd_pipeline.training.launch.TrainingJob) and returns its metrics; None: a
    # plain `accelerate launch` subprocess. Dagster sets one that launches through Pipes.
    launch_training: Callable[[Any], dict[str, Any]] | None = None
    # A forced re-evaluation (`rd materialize --refresh`): eval_scores evaluates again under an unchanged key,
    # without reusing its stored rows or journaled samples, and compares the new scores with the stored ones.
    refresh: bool = False

    @property
    def rd_home(self) -> Path:
        return self.config.rd_home()

    @property
    def store(self) -> Store:
        return Store(store_path(self.rd_home))

    def stage(self, table: str, benchmark: str, rows: Sequence[dict[str, Any]], **match: str) -> int:
        """Replace one partition of ``table`` with ``rows`` when the step commits. Returns the number of rows."""
        if self.staged is None:
            return self.store.replace_partition(table, benchmark, rows, **match)
        return self.store.stage_partition(self.staged, table, benchmark, rows, **match)

    def record_usage(self, row: dict[str, Any]) -> None:
        """Record tokens and cost at once: the money is spent whether or not the step's data is kept."""
        self.store.append("generation_usage", [row])

    def record_version(
        self,
        asset: str,
        benchmark: str,
        data_version: str,
        teacher_version: str | Sequence[str] = "",
        upstream: dict[str, Any] | None = None,
    ) -> None:
        """Remember which run made which version of an asset partition (for lineage and downstream versions);
        committed together with the step's rows. Several teacher versions are stored comma-joined."""
        if not isinstance(teacher_version, str):
            teacher_version = ",".join(teacher_version)
        record = [
            {
                "benchmark": benchmark,
                "asset": asset,
                "data_version": data_version,
                "run_id": self.run_id,
                "teacher_version": teacher_version,
                "upstream": json.dumps(upstream or {}, sort_keys=True),
                "recorded_at": datetime.now(timezone.utc).replace(tzinfo=None),
            }
        ]
        if self.staged is None:
            self.store.append("asset_versions", record)
        else:
            self.store.stage_append(self.staged, "asset_versions", record)

    def upstream_version(self, asset: str, benchmark: str = "") -> dict[str, Any]:
        """The latest recorded version of an upstream partition; a clear error if it was never materialized."""
        record = self.store.latest_version(asset, benchmark)
        if record is None:
            where = f"{asset}[{benchmark}]" if benchmark else asset
            raise RuntimeError(f"{where} has not been materialized yet; materialize it first")
        return record

    @contextmanager
    def progress(self, label: str) -> Iterator[ProgressCallback]:
        """Generation progress: lines in the log at most every 10 s, plus a terminal bar when attached to a TTY."""
        to_log = log_progress(self.log, label)
        if not sys.stderr.isatty():
            yield to_log
            return
        with progress_bar(label) as to_bar:

            def both(done: int, total: int, stats: GenerationStats) -> None:
                to_bar(done, total, stats)
                to_log(done, total, stats)

            yield both


def teacher_versions_of(record: dict[str, Any]) -> list[str]:
    """The teacher versions a version record or lineage reference carries, sorted: its ``teacher_versions``
    list, or its ``teacher_version`` string (one version, or several comma-joined as the store's
    ``asset_versions`` column and older lineage files hold them)."""
    value = record.get("teacher_versions", record.get("teacher_version"))
    parts = value.split(",") if isinstance(value, str) else (value or [])
    return sorted({part.strip() for part in parts if part and part.strip()})


def lineage_ref(record: dict[str, Any]) -> dict[str, Any]:
    """The part of an upstream version record that downstream lineage keeps."""
    return {
        "data_version": record["data_version"],
        "run_id": record["run_id"],
        "teacher_versions": teacher_versions_of(record),
    }


@dataclass(frozen=True)
class StepLineage:
    """What one version of a step was made from, built once per step: the teacher version(s) behind it and a
    lineage reference per upstream input. The version record, a checkpoint's ``lineage.json`` and the reported
    metadata are all written from it."""

    teacher_version: str | tuple[str, ...]
    upstream: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, teacher_version: str | Sequence[str], records: dict[str, dict[str, Any]], **extra: Any
    ) -> StepLineage:
        """Lineage from upstream version records (keyed ``asset`` or ``asset[benchmark]``); ``extra`` entries
        (such as an inputs key) are stored with the references in the version record."""
        teacher = teacher_version if isinstance(teacher_version, str) else tuple(teacher_version)
        return cls(teacher, {key: lineage_ref(record) for key, record in records.items()}, extra)

    @property
    def teacher_versions(self) -> list[str]:
        """The teacher versions as a sorted list."""
        return (
            teacher_versions_of({"teacher_version": self.teacher_version})
            if isinstance(self.teacher_version, str)
            else list(self.teacher_version)
        )

    def record(self, ctx: StepContext, asset: str, benchmark: str, data_version: str) -> None:
        """Record ``data_version`` of ``asset[benchmark]`` with this lineage (see ``StepContext.record_version``)."""
        ctx.record_version(asset, benchmark, data_version, self.teacher_version, self.upstream | self.extra)

    def checkpoint(self, base_model: str, config_hash: str) -> dict[str, Any]:
        """What a trained checkpoint's ``lineage.json`` records."""
        return {
            "base_model": base_model,
            "upstream": self.upstream,
            "teacher_versions": self.teacher_versions,
            "config_hash": config_hash,
        }
