"""What `rd materialize` shows and where the rest goes: step logs on the terminal without tracebacks, every event
with its full traceback in a log file under ``RD_HOME/logs/``, and one line naming what failed and why."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from rd_pipeline.config import PipelineConfig

_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
MATERIALIZE_JOB_NAME = "__ephemeral_asset_job__"  # the job name ``dg.materialize`` gives its runs
OBSERVE_JOB_NAME = "in_process_observation_job"  # the job name of Dagster's in-process ``observe``


def new_log_file(config: PipelineConfig, command: str = "materialize") -> Path:
    """A fresh log file path for one `rd` invocation: RD_HOME/logs/<command>-<UTC time>-<pid>.log."""
    import os

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = config.rd_home() / "logs" / f"{command}-{stamp}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class _NoFailureEvents(logging.Filter):
    """Keep Dagster's failure events (each a page of traceback) off the terminal; `rd` sums them up in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or getattr(record, "dagster_event", None) is None


def _python_logger(log_file: Path, console_level: str) -> logging.Logger:
    log = logging.Logger(f"rd.{log_file.stem}", level=logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(logging.Formatter(_FORMAT))
    console.addFilter(_NoFailureEvents())
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setLevel(logging.DEBUG)
    to_file.setFormatter(logging.Formatter(_FORMAT))
    log.addHandler(console)
    log.addHandler(to_file)
    return log


def rd_logger(log_file: Path) -> dg.LoggerDefinition:
    """A Dagster logger: the terminal gets step logs at the configured level without failure tracebacks, the log
    file gets every event at DEBUG with them."""

    @dg.logger(
        config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
        description="rd's terminal and log-file logger",
    )
    def logger_(init_context: dg.InitLoggerContext) -> logging.Logger:
        return _python_logger(log_file, init_context.logger_config["log_level"])

    return logger_


def _console(log_file: Path | None) -> dict[str, dg.LoggerDefinition] | None:
    """The run's console logger: ``rd_logger`` writing to ``log_file``, else Dagster's default."""
    return None if log_file is None else {"console": rd_logger(log_file)}


def _logged_job(
    name: str,
    selection: Sequence[str] | dg.AssetSelection,
    assets: Sequence[Any],
    resources: dict[str, Any],
    log_file: Path | None,
) -> dg.JobDefinition:
    """The asset job ``name`` over ``selection`` of ``assets``, with ``rd_logger`` as its console logger when
    there is a ``log_file``."""
    definitions = dg.Definitions(
        jobs=[dg.define_asset_job(name, selection=selection)],
        assets=list(assets),
        resources=resources,
        loggers=_console(log_file),
    )
    return definitions.resolve_job_def(name)


def materialize_logged(
    assets: Sequence[Any],
    selection: Sequence[str],
    partition_key: str | None,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    run_config: dict[str, Any],
    tags: dict[str, str],
    log_file: Path | None,
) -> dg.ExecuteInProcessResult:
    """``dg.materialize``, with ``rd_logger`` as the run's console logger when there is a ``log_file``."""
    job = _logged_job(MATERIALIZE_JOB_NAME, list(selection), assets, resources, log_file)
    return job.execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=partition_key,
        raise_on_error=False,
        tags=tags,
    )


def observe_logged(
    assets: Sequence[Any],
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    run_config: dict[str, Any],
    tags: dict[str, str],
    log_file: Path | None,
) -> dg.ExecuteInProcessResult:
    """Dagster's in-process ``observe``, with ``rd_logger`` as the run's console logger when there is a
    ``log_file``; a failure raises the underlying error."""
    with warnings.catch_warnings():  # include_sources is marked beta; the notice means nothing to rd's users
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        selection = dg.AssetSelection.all(include_sources=True)
    job = _logged_job(OBSERVE_JOB_NAME, selection, assets, resources, log_file)
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=True, tags=tags)


@dataclass(frozen=True)
class StepFailure:
    """What failed in a run, in words."""

    asset: str
    partition: str | None
    cause: str

    def line(self, log_file: Path | None) -> str:
        where = f"{self.asset}[{self.partition}]" if self.partition else self.asset
        cause = self.cause if self.cause.startswith(where) else f"{where} failed: {self.cause}"
        return f"rd: {cause}" + (f" (full log: {log_file})" if log_file else "")


def _innermost(error: SerializableErrorInfo) -> SerializableErrorInfo:
    while error.cause is not None:
        error = error.cause
    return error


def error_text(error: SerializableErrorInfo) -> str:
    """The user-facing message of the exception at the bottom of a Dagster error chain, on one line."""
    inner = _innermost(error)
    message = inner.message.strip()
    prefix, _, rest = message.partition(": ")
    own = prefix.startswith("rd_pipeline.") or "." not in prefix
    if rest and own and inner.cls_name and prefix.endswith(inner.cls_name):
        message = rest
    elif rest and inner.cls_name and prefix.endswith(inner.cls_name):
        message = f"{inner.cls_name}: {rest}"
    return " ".join(message.split())


def external_errors(
    instance: dg.DagsterInstance, run_id: str, step_key: str | None
) -> list[SerializableErrorInfo]:
    """Errors a step's external processes (Dagster Pipes, e.g. a training job) reported before they exited; they
    are in the instance's event log only."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    events = [entry.dagster_event for entry in entries if entry.dagster_event is not None]
    return [
        event.engine_event_data.error
        for event in events
        if event.step_key == step_key
        and event.engine_event_data is not None
        and event.engine_event_data.error
    ]


def step_failure(
    result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance | None = None
) -> StepFailure:
    """The first failed step of a run: its asset, partition and cause (for a failed external process, the error it
    reported rather than its exit code). ``instance`` defaults to the one DAGSTER_HOME names (the one
    ``materialize_graph`` ran on)."""
    instance = instance if instance is not None else dg.DagsterInstance.get()
    partition = result.dagster_run.tags.get("dagster/partition")
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        external = external_errors(instance, result.run_id, event.step_key)
        if data.user_failure_data is not None and data.user_failure_data.description:
            cause = data.user_failure_data.description
        elif external:
            cause = f"{error_text(external[-1])} (in its external process)"
        elif data.error is not None:
            cause = error_text(data.error)
        else:
            cause = "failed without an error message"
        return StepFailure(event.step_key or "run", partition, " ".join(cause.split()))
    return StepFailure("run", partition, f"run {result.run_id} failed before any step ran")


def write_error(log_file: Path, title: str, text: str) -> None:
    """Append a titled block (a traceback) to the log file."""
    with open(log_file, "a", encoding="utf-8") as out:
        out.write(f"\n==== {title} ====\n{text}\n")


def record_failure(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, log_file: Path) -> None:
    """Write every failed step's full error chain, and those its external processes reported, to the log file."""
    for event in result.get_step_failure_events():
        for error in external_errors(instance, result.run_id, event.step_key):
            write_error(log_file, f"step {event.step_key}: external process failed", error.to_string())
        if event.step_failure_data.error is not None:
            write_error(log_file, f"step {event.step_key} failed", event.step_failure_data.error.to_string())
