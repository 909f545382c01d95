"""The `rd` commands whose code is a module of this package with its own options (gpu-check, bench, experiment)."""

from __future__ import annotations

import argparse
import importlib

# Commands whose code is a module of this package with its own options: `rd <words> [options]` calls the module's
# main(options, prog="rd <words>"), so `rd gpu-check --help` lists gpu_check's options.
MODULE_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("gpu-check",): (
        "rd_pipeline.cli.gpu_check",
        "run the tiny graph on this machine's GPUs and say what ran where (--cpu: a CPU rehearsal)",
    ),
    ("bench",): ("rd_pipeline.cli.bench", "run the benchmarks and summarise them under ./bench-results/"),
    ("experiment", "known-answer"): (
        "rd_pipeline.cli.known_answer",
        "one run of the known-answer experiment (the pipeline on a task whose answers are known)",
    ),
    ("experiment", "known-answer-grid"): (
        "rd_pipeline.cli.known_answer.grid",
        "the known-answer experiment over seeds, teachers and reward settings, with intervals",
    ),
}


def run_module_command(argv: list[str]) -> int | None:
    """Run the module command ``argv`` starts with and return its exit code; None when it names none."""
    for words, (module, _) in MODULE_COMMANDS.items():
        if tuple(argv[: len(words)]) == words:
            module_main = importlib.import_module(module).main
            return module_main(argv[len(words) :], prog="rd " + " ".join(words)) or 0
    return None


def add_module_commands(commands: argparse._SubParsersAction) -> None:
    """List the module commands in `rd --help` and `rd experiment --help` (run_module_command runs them)."""
    experiments = None
    for words, (_, help_text) in MODULE_COMMANDS.items():
        if words[0] == "experiment" and experiments is None:
            experiment = commands.add_parser(
                "experiment", help="run an experiment (known-answer, known-answer-grid)"
            )
            experiments = experiment.add_subparsers(dest="experiment", required=True)
        parent = experiments if words[0] == "experiment" else commands
        parent.add_parser(words[-1], help=help_text, add_help=False)
