"""The ``rd`` command: materialize the graph, print the report, open the UI, trace lineage, export a model."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.cli.graph_commands import cmd_lineage, cmd_materialize, cmd_rebuild, cmd_report
from rd_pipeline.cli.model_commands import cmd_accelerate_config, cmd_budget, cmd_export
from rd_pipeline.cli.module_commands import add_module_commands, run_module_command
from rd_pipeline.cli.options import add_config_args, config_of
from rd_pipeline.cli.ui import cmd_ui
from rd_pipeline.config import TRAINING_STRATEGIES, ConfigError
from rd_pipeline.generation.journal import JournalCorruptError
from rd_pipeline.preflight import InputError
from rd_pipeline.store import StoreCorruptError

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


COMMAND_HELP = {
    "materialize": "materialize the asset graph through Dagster",
    "report": "print the comparison table",
    "lineage": "print an asset's inputs back to the teacher version",
    "export": "write a model asset as a Hugging Face model folder with a lineage model card",
    "budget": "show the API spend that budgets count, or reset it (start counting from $0)",
    "accelerate-config": "print an accelerate config file for a training strategy",
    "rebuild": "move rd.duckdb aside and re-make every table from the journal and the checkpoints "
    "(after the database was damaged or lost); use the config the tables were made with",
    "ui": "start the Dagster UI on 127.0.0.1",
}
"""What `rd --help` says of each subcommand defined here."""

Subcommands = argparse._SubParsersAction


def _subcommand(
    commands: Subcommands,
    name: str,
    func: Callable[[argparse.Namespace], int],
    config: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand that runs ``func``, with the config options unless ``config`` is false."""
    parser = commands.add_parser(name, help=COMMAND_HELP[name])
    if config:
        add_config_args(parser)
    parser.set_defaults(func=func)
    return parser


def _add_materialize(commands: Subcommands) -> None:
    materialize = _subcommand(commands, "materialize", cmd_materialize)
    materialize.add_argument("--select", help="comma-separated asset names (default: all)")
    materialize.add_argument("--partition", help="comma-separated benchmarks (default: all configured)")
    materialize.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    materialize.add_argument(
        "--refresh",
        action="store_true",
        help="evaluate eval_scores again even where its evaluation key is unchanged (generating and judging "
        "afresh) and warn (check eval_drift) where a score left the 95%% interval of the stored one",
    )


def _add_report_and_lineage(commands: Subcommands) -> None:
    _subcommand(commands, "report", cmd_report)
    lineage = _subcommand(commands, "lineage", cmd_lineage)
    lineage.add_argument("asset", help="asset name, e.g. rl_student")
    lineage.add_argument("--partition", help="benchmark partition (partitioned assets)")


def _add_export(commands: Subcommands) -> None:
    export = _subcommand(commands, "export", cmd_export)
    export.add_argument("asset", choices=["sft_student", "rl_student", "reward_model"])
    export.add_argument("--to", required=True, help="the folder to write (new or empty)")
    export.add_argument("--push", metavar="REPO_ID", help="also upload it to this hub repository (HF_TOKEN)")
    export.add_argument("--private", action="store_true", help="create the hub repository as private")


def _add_budget(commands: Subcommands) -> None:
    budget = _subcommand(commands, "budget", cmd_budget)
    budget.add_argument("action", choices=["show", "reset"])
    budget.add_argument("--endpoint", help="reset only this base URL (default: every endpoint)")
    budget.add_argument("--model", help="reset only this model name (default: every model)")


def _add_accelerate_config(commands: Subcommands) -> None:
    accel = _subcommand(commands, "accelerate-config", cmd_accelerate_config, config=False)
    accel.add_argument("strategy", choices=list(TRAINING_STRATEGIES))
    accel.add_argument("--num-processes", type=int, default=1, help="processes in total (one per GPU)")
    accel.add_argument("--num-machines", type=int, default=1)
    accel.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])


def _add_rebuild_and_ui(commands: Subcommands) -> None:
    rebuild = _subcommand(commands, "rebuild", cmd_rebuild)
    rebuild.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    ui = _subcommand(commands, "ui", cmd_ui)
    ui.add_argument("--port", type=int, default=3000)


PARSER_BUILDERS = (
    _add_materialize,
    _add_report_and_lineage,
    _add_export,
    _add_budget,
    _add_accelerate_config,
    _add_rebuild_and_ui,
)


def build_parser() -> argparse.ArgumentParser:
    """The `rd` parser: the module commands, then one subcommand per builder in ``PARSER_BUILDERS``."""
    parser = argparse.ArgumentParser(
        prog="rd", description="Distill a teacher LLM's data and rewards into a student."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_module_commands(commands)
    for add_command in PARSER_BUILDERS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    module_command = run_module_command(sys.argv[1:] if argv is None else argv)
    if module_command is not None:
        return module_command
    args = build_parser().parse_args(argv)
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
            home = config_of(args).rd_home()
        except Exception:  # the config itself may be what failed
            pass
        log_file = home / "logs" / f"{args.command}-{os.getpid()}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as out:
        out.write(traceback.format_exc())
    return Path(log_file)


if __name__ == "__main__":
    sys.exit(main())
