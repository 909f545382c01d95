"""What the `rd` commands share: the config options, the config and resource they name, list options."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from rd_pipeline.config import PipelineConfig, preset_names, resolve_config

if TYPE_CHECKING:
    from rd_pipeline.defs.resources import PipelineResource


def add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", help="pipeline config YAML file")
    group.add_argument("--preset", help=f"a shipped preset: {', '.join(preset_names())} (default: tiny)")


def config_of(args: argparse.Namespace) -> PipelineConfig:
    return resolve_config(args.config, args.preset)


def pipeline_of(args: argparse.Namespace) -> tuple[PipelineResource, PipelineConfig]:
    """The resource naming the chosen config (``--config``, ``--preset``, else the environment's) and that config,
    resolved once; Dagster calls get both explicitly."""
    from rd_pipeline.defs.resources import PipelineResource

    resource = PipelineResource.pinned(args.config, args.preset)
    return resource, resource.pipeline_config()


def config_env(resource: PipelineResource) -> dict[str, str]:
    """The environment a Dagster tool started from here (the UI) needs to load the same config."""
    env = {k: v for k, v in os.environ.items() if k not in ("RD_CONFIG", "RD_PRESET")}
    if resource.config_file:
        env["RD_CONFIG"] = resource.config_file
    else:
        env["RD_PRESET"] = resource.preset or "tiny"
    return env


def split_list(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None
