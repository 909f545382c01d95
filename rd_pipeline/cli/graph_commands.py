"""`rd materialize`, `rd report`, `rd lineage` and `rd rebuild`: run the asset graph and read what it made."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rd_pipeline.cli.options import config_of, pipeline_of, split_list
from rd_pipeline.store import store_path

if TYPE_CHECKING:
    from rd_pipeline.defs.resources import PipelineResource


def _preflight(
    resource: PipelineResource,
    selection: list[str] | None,
    partitions: list[str] | None,
    refresh: bool = False,
) -> None:
    """Fail on bad input (exit 2) or unreadable state (exit 1) before the teacher is observed or a model loaded."""
    from rd_pipeline import preflight
    from rd_pipeline.defs import build_definitions
    from rd_pipeline.defs.run import asset_names

    config = resource.pipeline_config()
    preflight.check_selection(selection, asset_names(build_definitions(resource)))
    preflight.check_refresh(refresh, selection)
    preflight.check_partitions(partitions, config)
    preflight.check_api_keys(config)
    if selection is None or "benchmark_prompts" in selection:
        preflight.check_benchmark_data(config)
    preflight.check_state(config.rd_home())


def cmd_materialize(args: argparse.Namespace) -> int:
    resource, config = pipeline_of(args)
    from rd_pipeline.defs.logs import new_log_file, step_failure
    from rd_pipeline.defs.run import materialize_graph

    selection, partitions = split_list(args.select), split_list(args.partition)
    refresh = getattr(args, "refresh", False)
    _preflight(resource, selection, partitions, refresh)
    args.log_file = new_log_file(config)
    results = materialize_graph(
        config, resource, selection, partitions, args.log_level, log_file=args.log_file, refresh=refresh
    )
    failed = [r for r in results if not r.success]
    if failed:
        print(step_failure(failed[0]).line(args.log_file), file=sys.stderr)
        return 1
    print(f"rd: {len(results)} run(s) succeeded; state in {config.rd_home()}")
    if args.select is None or "report" in (split_list(args.select) or []):
        return cmd_report(args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rd_pipeline.evaluation import format_table
    from rd_pipeline.evaluation.report import eval_key_lines
    from rd_pipeline.store import Store

    config = config_of(args)
    scores = Store(store_path(config.rd_home())).read("eval_scores")
    if not scores:
        print("rd: no eval scores yet; run `rd materialize` first.", file=sys.stderr)
        return 1
    print(format_table(scores))
    print("\n".join(["", "Evaluation keys:", *eval_key_lines(scores)]))
    summary = config.rd_home() / "reports" / "latest" / "report.md"
    if summary.is_file():
        print(f"\nFull report with charts: {summary}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from rd_pipeline.steps.lineage import recorded_tables, render, teacher_versions, trace
    from rd_pipeline.store import Store

    config = config_of(args)
    store = Store(store_path(config.rd_home()))
    partitions = [args.partition] if args.partition else [""] + config.benchmark_names
    found = False
    for benchmark in partitions:
        node = trace(store, args.asset, benchmark)
        if node is None:
            continue
        found = True
        print(render(node))
        for line in recorded_tables(store, node):
            print(line)
        print(f"teacher version(s): {', '.join(sorted(teacher_versions(node))) or 'none recorded'}\n")
    if not found:
        print(f"rd: no materialization of {args.asset} recorded in {config.rd_home()}", file=sys.stderr)
        return 1
    return 0


MODEL_ASSETS = ("sft_student", "reward_model", "rl_student")


def _checkpoints(rd_home: Path) -> set[str]:
    """``asset/version`` of every finished checkpoint under ``rd_home/models``."""
    return {
        f"{asset}/{path.name}"
        for asset in MODEL_ASSETS
        for path in (rd_home / "models" / asset).glob("*")
        if path.is_dir() and "." not in path.name
    }


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Move rd.duckdb aside and re-make every table from the journal (no generation) and the checkpoints."""
    from datetime import datetime, timezone

    from rd_pipeline.store import Store

    config = config_of(args)
    home = config.rd_home()
    database = store_path(home)
    before = _checkpoints(home)
    if database.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        aside = database.with_name(f"{database.name}.replaced-{stamp}")
        database.rename(aside)
        wal = database.with_name(database.name + ".wal")
        if wal.exists():
            wal.rename(aside.with_name(aside.name + ".wal"))
        print(f"rd: moved {database} aside to {aside}; delete it once the rebuild has succeeded")
    args.select = args.partition = None
    status = cmd_materialize(args)
    if status:
        return status
    usage = Store(database).read("generation_usage")
    generated = sum(row["samples_generated"] for row in usage)
    from_journal = sum(row["samples_from_journal"] for row in usage)
    trained = sorted(_checkpoints(home) - before)
    models = f"trained again: {', '.join(trained)}" if trained else "every checkpoint reused"
    print(
        f"rd: rebuilt {database}: {from_journal} samples read from the journal, {generated} generated; {models}"
    )
    return 0
