"""Materializing the graph from the command line: in order, partition by partition, on a persistent instance."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Sequence
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dagster as dg

from rd_pipeline.config import PipelineConfig
from rd_pipeline.defs import build_definitions, resources_for, teacher
from rd_pipeline.defs.gpus import size_gpu_pool
from rd_pipeline.defs.logs import materialize_logged, observe_logged, record_failure
from rd_pipeline.defs.resources import REFRESH_TAG, PipelineResource

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster_instance.yaml")
POSTGRES_INSTANCE_TEMPLATE = Path(__file__).with_name("dagster_instance_postgres.yaml")
POSTGRES_URL_ENV = "RD_DAGSTER_POSTGRES_URL"


def instance_template() -> Path:
    """The instance config `rd` installs: PostgreSQL storage when $RD_DAGSTER_POSTGRES_URL is set, else SQLite.

    A ``postgresql://`` URL is rewritten (in this process's environment, which runs started from here inherit)
    to name the psycopg2 driver that dagster-postgres uses; SQLAlchemy would otherwise look for psycopg 3.
    """
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        return INSTANCE_TEMPLATE
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            os.environ[POSTGRES_URL_ENV] = "postgresql+psycopg2://" + url.removeprefix(scheme)
    return POSTGRES_INSTANCE_TEMPLATE


def dagster_home(config: PipelineConfig) -> Path:
    """RD_HOME/dagster, holding the instance's storage and logs, with the dagster.yaml of ``instance_template()``.

    The file is written on first use, and replaced when the storage choice changed since `rd` wrote it; a file
    edited by hand is left as it is.
    """
    home = config.rd_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    installed, template = home / "dagster.yaml", instance_template()
    shipped = {path.read_text() for path in (INSTANCE_TEMPLATE, POSTGRES_INSTANCE_TEMPLATE)}
    if not installed.is_file() or (
        installed.read_text() in shipped and installed.read_text() != template.read_text()
    ):
        shutil.copyfile(template, installed)
    elif template == POSTGRES_INSTANCE_TEMPLATE and "postgres:" not in installed.read_text():
        print(
            f"rd: warning: ${POSTGRES_URL_ENV} is set but {installed} was edited by hand and has no postgres "
            f"storage; it is used as it is (copy {template} over it to store runs in PostgreSQL)",
            file=sys.stderr,
        )
    return home


def instance_for(config: PipelineConfig) -> dg.DagsterInstance:
    """The persistent instance in RD_HOME/dagster, its `gpu` pool sized to this machine's GPUs."""
    os.environ["DAGSTER_HOME"] = str(dagster_home(config))
    os.environ.setdefault("RD_HOME", str(config.rd_home()))
    instance = dg.DagsterInstance.get()
    size_gpu_pool(instance)
    return instance


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the `rd` runs on this host whose process is gone (killed), and free the pool slots they hold.

    Without this, a run killed while holding a `gpu` pool slot keeps it forever, and the next run waits on it.
    """
    released = []
    in_progress = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    for record in instance.get_run_records(dg.RunsFilter(statuses=in_progress, tags={"rd/entry": "cli"})):
        run = record.dagster_run
        pid, host = run.tags.get("rd/pid"), run.tags.get("rd/host")
        if host != socket.gethostname() or not pid or _process_alive(int(pid)):
            continue
        instance.report_run_failed(
            run, message=f"the rd process ({pid}) that ran this run is gone; marked failed"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def materialization_order(definitions: dg.Definitions) -> list[tuple[str, bool]]:
    """The materializable assets in dependency order, each with whether it is partitioned.

    A topological sort of the definitions' asset graph; ties keep the order the assets were defined in.
    """
    assets = [asset for asset in definitions.assets or [] if isinstance(asset, dg.AssetsDefinition)]
    partitioned = {key: asset.partitions_def is not None for asset in assets for key in asset.keys}
    materializable = {key for asset in assets if asset.is_materializable for key in asset.keys}
    deps = {key: sorted(parents) for asset in assets for key, parents in asset.asset_deps.items()}
    sorter = TopologicalSorter({key: deps.get(key, []) for key in partitioned})
    sorter.prepare()
    rank = {key: index for index, key in enumerate(partitioned)}
    order = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda key: rank.get(key, len(rank)))
        order.extend(key for key in ready if key in materializable)
        sorter.done(*ready)
    return [(key.to_user_string(), partitioned[key]) for key in order]


def asset_names(definitions: dg.Definitions) -> list[str]:
    """The names of the assets `rd materialize` can select, in dependency order."""
    return [name for name, _ in materialization_order(definitions)]


def plan_runs(
    definitions: dg.Definitions, selection: Sequence[str], partitions: Sequence[str]
) -> list[tuple[list[str], str | None]]:
    """Group the selected assets into runs: consecutive partitioned assets run together per partition."""
    order = materialization_order(definitions)
    names = [name for name, _ in order]
    unknown = sorted(set(selection) - set(names))
    if unknown:
        raise ValueError(f"unknown asset(s) {unknown}; assets: {', '.join(names)}")
    runs: list[tuple[list[str], str | None]] = []
    block: list[str] = []

    def flush() -> None:
        runs.extend((list(block), partition) for partition in partitions)
        block.clear()

    for name, partitioned in order:
        if name not in selection:
            continue
        if partitioned:
            block.append(name)
        else:
            if block:
                flush()
            runs.append(([name], None))
    if block:
        flush()
    return runs


def materialize_graph(
    config: PipelineConfig,
    resource: PipelineResource,
    selection: Sequence[str] | None = None,
    partitions: Sequence[str] | None = None,
    log_level: str = "INFO",
    log_file: Path | None = None,
    refresh: bool = False,
) -> list[dg.ExecuteInProcessResult]:
    """Observe the teacher, then materialize the selected assets in dependency order; stop at the first failure.

    With ``log_file`` the terminal shows step logs without failure tracebacks and the file gets every event in full.
    With ``refresh`` the runs carry the ``rd/refresh`` tag: eval_scores evaluates again even under an unchanged
    key and compares the new scores with the stored ones (its ``eval_drift`` check).
    """
    definitions = build_definitions(resource)
    assets = list(definitions.assets or [])
    selection = list(selection or asset_names(definitions))
    partitions = list(partitions or config.benchmark_names)
    for partition in partitions:
        config.benchmark(partition)  # a clear error for an unconfigured benchmark
    instance = instance_for(config)
    for run_id in release_abandoned_runs(instance):
        print(f"rd: run {run_id} was interrupted (its process is gone): marked failed, its pool slots freed")
    resources = resources_for(resource)
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = {"rd/entry": "cli", "rd/pid": str(os.getpid()), "rd/host": socket.gethostname()}
    if refresh:
        tags[REFRESH_TAG] = "true"
    observe_logged([teacher], instance, resources, run_config, tags, log_file)
    results = []
    for selected, partition in plan_runs(definitions, selection, partitions):
        result = materialize_logged(
            assets, selected, partition, instance, resources, run_config, tags, log_file
        )
        if log_file is not None and not result.success:
            record_failure(result, instance, log_file)
        results.append(result)
        if not result.success:
            break
    return results


def latest_materialization_metadata(dagster_home: Path, assets: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest materialization metadata of each of ``assets`` (per partition) in the instance at
    ``dagster_home``, keyed ``asset[partition]`` (``asset`` when unpartitioned)."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    found: dict[str, dict[str, Any]] = {}
    with dg.DagsterInstance.get() as instance:
        for asset in assets:
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=50).records
            for record in records:  # newest first
                materialization = record.asset_materialization
                key = f"{asset}[{materialization.partition}]" if materialization.partition else asset
                if key not in found:
                    found[key] = {name: value.value for name, value in materialization.metadata.items()}
    return found
