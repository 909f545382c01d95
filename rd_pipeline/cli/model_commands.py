"""`rd export`, `rd budget` and `rd accelerate-config`: export a model, the API spend, a training launch file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rd_pipeline.cli.options import config_of
from rd_pipeline.config import PipelineConfig


def cmd_export(args: argparse.Namespace) -> int:
    from rd_pipeline.export import ExportError, export_model, hub_target, push_folder

    config = config_of(args)
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

    config = config_of(args)
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
