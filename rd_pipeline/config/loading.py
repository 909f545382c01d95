"""Loading the configuration: a YAML file, a shipped preset, or what the environment names."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from rd_pipeline.config.pipeline import PipelineConfig
from rd_pipeline.config.section import ConfigError

PRESETS_DIR = Path(__file__).parent.parent / "presets"


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {path}: {item['msg']}{got_text}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> PipelineConfig:
    """Validate a config mapping; errors name every bad field path and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, error)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Load a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return parse_config(data or {}, source=str(path))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> PipelineConfig:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return load_config(path)


def resolve_config(config_path: str | None = None, preset: str | None = None) -> PipelineConfig:
    """The config the CLI and Dagster use: a file, a preset, $RD_CONFIG, $RD_PRESET, else the tiny preset."""
    if config_path and preset:
        raise ConfigError("give either a config file or a preset, not both")
    config_path = config_path or (None if preset else os.environ.get("RD_CONFIG"))
    if config_path:
        return load_config(config_path)
    return load_preset(preset or os.environ.get("RD_PRESET") or "tiny")
