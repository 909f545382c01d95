"""The ``rd`` command: materialize the graph, print the report, open the UI, trace lineage, export a model."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.cli.module_commands import add_module_commands, run_module_command
from rd_pipeline.config import ConfigError, PipelineConfig, preset_names, resolve_config
from rd_pipeline.generation.journal import JournalCorruptError
from rd_pipeline.preflight import InputError
from rd_pipeline.store import StoreCorruptError, store_path

if TYPE_CHECKING:
    from rd_pipeline.defs.resources import PipelineResource


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", help="pipeline config YAML file")
    group.add_argument("--preset", help=f"a shipped preset: {', '.join(preset_names())} (default: tiny)")


def _config(args: argparse.Namespace) -> PipelineConfig:
    return resolve_config(args.config, args.preset)


def _pipeline(args: argparse.Namespace) -> tuple[PipelineResource, PipelineConfig]:
    """The resource naming the chosen config (``--config``, ``--preset``, else the environment's) and that config,
    resolved once; Dagster calls get both explicitly."""
    from rd_pipeline.defs.resources import PipelineResource

    resource = PipelineResource.pinned(args.config, args.preset)
    return resource, resource.pipeline_config()


def _config_env(resource: PipelineResource) -> dict[str, str]:
    """The environment a Dagster tool started from here (the UI) needs to load the same config."""
    env = {k: v for k, v in os.environ.items() if k not in ("RD_CONFIG", "RD_PRESET")}
    if resource.config_file:
        env["RD_CONFIG"] = resource.config_file
    else:
        env["RD_PRESET"] = resource.preset or "tiny"
    return env


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


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
    resource, config = _pipeline(args)
    from rd_pipeline.defs.logs import new_log_file, step_failure
    from rd_pipeline.defs.run import materialize_graph

    selection, partitions = _split(args.select), _split(args.partition)
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
    if args.select is None or "report" in (_split(args.select) or []):
        return cmd_report(args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rd_pipeline.evaluation import format_table
    from rd_pipeline.evaluation.report import eval_key_lines
    from rd_pipeline.store import Store

    config = _config(args)
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

    config = _config(args)
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


def cmd_export(args: argparse.Namespace) -> int:
    from rd_pipeline.export import ExportError, export_model, hub_target, push_folder

    config = _config(args)
    try:
        target = hub_target(args.push) if args.push else None  # a missing token fails before any work
        exported = export_model(config, args.asset, Path(args.to))
        print(
            f"rd: exported {args.asset} {exported.facts.version} to {exported.folder} (model card: README.md)"
        )
        if target is not None:
            url = push_folder(exported.folder, target, private=args.private)
            print(f"rd: pushed {exported.folder} to {target.repo_id} at {target.endpoint}: {url}")
    except ExportError as error:
        print(f"rd: {error}", file=sys.stderr)
        return 1
    return 0


def _budgets(config: PipelineConfig) -> dict[tuple[str, str], float | None]:
    """The configured budget of each API endpoint and model (teacher, judge, eval judge)."""
    budgets: dict[tuple[str, str], float | None] = {}
    for model in (config.teacher, config.judge_model, config.eval_judge_model):
        if model.api is not None:
            budgets[(model.api.endpoint_urls()[0], model.api.model or model.ref)] = model.api.max_budget_usd
    return budgets


def cmd_budget(args: argparse.Namespace) -> int:
    from rd_pipeline.steps.context import StepContext
    from rd_pipeline.steps.generation_guard import import_journal_spend

    config = _config(args)
    ctx = StepContext(config)
    import_journal_spend(ctx)  # spend of runs that crashed before recording it
    if args.action == "reset":
        resets = ctx.store.reset_api_spend(args.endpoint, args.model)
        for row in resets:
            print(
                f"rd: budget reset for {row['model']} at {row['endpoint']}: ${row['spent_usd']:.4f} had been "
                "spent since the previous reset; spend counts from $0 now (the history stays in api_spend)"
            )
        if not resets:
            print("rd: no API spend recorded for that endpoint and model; nothing to reset")
        return 0
    rows = ctx.store.api_spend()
    if not rows:
        print(f"rd: no API spend recorded in {config.rd_home()}")
        return 0
    budgets = _budgets(config)
    print(f"{'endpoint':40} {'model':24} {'spent':>10} {'budget':>10} {'all time':>10}  last reset")
    for row in rows:
        budget = budgets.get((row["endpoint"], row["model"]))
        spent, total = f"${row['spent_usd']:.4f}", f"${row['total_usd']:.4f}"
        limit = f"${budget:.4f}" if budget is not None else "none"
        print(
            f"{row['endpoint']:40} {row['model']:24} {spent:>10} {limit:>10} {total:>10}  "
            f"{row['last_reset'] or 'never'}"
        )
    return 0


def cmd_accelerate_config(args: argparse.Namespace) -> int:
    from rd_pipeline.training.launch import accelerate_config_yaml

    print(
        accelerate_config_yaml(
            args.strategy,
            num_processes=args.num_processes,
            num_machines=args.num_machines,
            mixed_precision=args.mixed_precision,
        ),
        end="",
    )
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

    config = _config(args)
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


def cmd_ui(args: argparse.Namespace) -> int:
    resource, config = _pipeline(args)
    from rd_pipeline.defs.run import dagster_home, instance_for

    instance_for(config).dispose()  # installs the instance config and sizes the gpu pool to this machine
    env = dict(_config_env(resource), DAGSTER_HOME=str(dagster_home(config)), RD_HOME=str(config.rd_home()))
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "rd_pipeline.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(args.port),
    ]
    print(f"rd: Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    return run_until_signalled(command, env)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_until_signalled(command: list[str], env: dict[str, str], grace_s: float = 20.0) -> int:
    """Run `command` in a process group of its own until it exits or this process is told to stop.

    SIGINT, SIGTERM and SIGHUP are passed on to the whole group as SIGINT (what `dagster dev` shuts down its
    webserver, daemon and code servers on); whatever is still running `grace_s` later is killed, so nothing keeps
    serving the port after `rd ui` has gone. Returns the command's exit status, or 128 + the signal's number.
    """
    process = subprocess.Popen(command, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_group(process.pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        while True:
            try:
                status = process.wait(timeout=grace_s if received else None)
                break
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:  # the group's other members may outlive its leader
            _signal_group(process.pid, signal.SIGKILL)
    return 128 + received[0] if received else status


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    module_command = run_module_command(sys.argv[1:] if argv is None else argv)
    if module_command is not None:
        return module_command
    parser = argparse.ArgumentParser(
        prog="rd", description="Distill a teacher LLM's data and rewards into a student."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_module_commands(commands)

    materialize = commands.add_parser("materialize", help="materialize the asset graph through Dagster")
    _add_config_args(materialize)
    materialize.add_argument("--select", help="comma-separated asset names (default: all)")
    materialize.add_argument("--partition", help="comma-separated benchmarks (default: all configured)")
    materialize.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    materialize.add_argument(
        "--refresh",
        action="store_true",
        help="evaluate eval_scores again even where its evaluation key is unchanged (generating and judging "
        "afresh) and warn (check eval_drift) where a score left the 95%% interval of the stored one",
    )
    materialize.set_defaults(func=cmd_materialize)

    report = commands.add_parser("report", help="print the comparison table")
    _add_config_args(report)
    report.set_defaults(func=cmd_report)

    lineage = commands.add_parser("lineage", help="print an asset's inputs back to the teacher version")
    _add_config_args(lineage)
    lineage.add_argument("asset", help="asset name, e.g. rl_student")
    lineage.add_argument("--partition", help="benchmark partition (partitioned assets)")
    lineage.set_defaults(func=cmd_lineage)

    export = commands.add_parser(
        "export", help="write a model asset as a Hugging Face model folder with a lineage model card"
    )
    _add_config_args(export)
    export.add_argument("asset", choices=["sft_student", "rl_student", "reward_model"])
    export.add_argument("--to", required=True, help="the folder to write (new or empty)")
    export.add_argument("--push", metavar="REPO_ID", help="also upload it to this hub repository (HF_TOKEN)")
    export.add_argument("--private", action="store_true", help="create the hub repository as private")
    export.set_defaults(func=cmd_export)

    budget = commands.add_parser(
        "budget", help="show the API spend that budgets count, or reset it (start counting from $0)"
    )
    budget.add_argument("action", choices=["show", "reset"])
    _add_config_args(budget)
    budget.add_argument("--endpoint", help="reset only this base URL (default: every endpoint)")
    budget.add_argument("--model", help="reset only this model name (default: every model)")
    budget.set_defaults(func=cmd_budget)

    accel = commands.add_parser(
        "accelerate-config", help="print an accelerate config file for a training strategy"
    )
    accel.add_argument("strategy", choices=["ddp", "fsdp2", "zero2", "zero3"])
    accel.add_argument("--num-processes", type=int, default=1, help="processes in total (one per GPU)")
    accel.add_argument("--num-machines", type=int, default=1)
    accel.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    accel.set_defaults(func=cmd_accelerate_config)

    rebuild = commands.add_parser(
        "rebuild",
        help="move rd.duckdb aside and re-make every table from the journal and the checkpoints "
        "(after the database was damaged or lost); use the config the tables were made with",
    )
    _add_config_args(rebuild)
    rebuild.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    rebuild.set_defaults(func=cmd_rebuild)

    ui = commands.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    _add_config_args(ui)
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".* is currently in beta")  # Dagster's notice on every import
    try:
        return args.func(args)
    except (ConfigError, InputError, BenchmarkDataError) as error:
        print(f"rd: {error}", file=sys.stderr)
        return 2
    except (StoreCorruptError, JournalCorruptError) as error:
        print(f"rd: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # anything else: one line here, the traceback in the log file
        log_file = _write_traceback(args)
        message = " ".join(str(error).split()) or "(no message)"
        print(f"rd: {type(error).__name__}: {message} (full traceback: {log_file})", file=sys.stderr)
        return 1


def _write_traceback(args: argparse.Namespace) -> Path:
    """Append the exception being handled to this invocation's log file (a new one if it has none yet)."""
    import traceback

    log_file = getattr(args, "log_file", None)
    if log_file is None:
        home = Path(os.environ.get("RD_HOME", ".rd"))
        try:
            home = _config(args).rd_home()
        except Exception:  # the config itself may be what failed
            pass
        log_file = home / "logs" / f"{args.command}-{os.getpid()}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as out:
        out.write(traceback.format_exc())
    return Path(log_file)


if __name__ == "__main__":
    sys.exit(main())
