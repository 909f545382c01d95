"""What every configuration section shares: strict, frozen pydantic models and the error a bad file raises."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    """A configuration section: unknown fields are errors, and a loaded config cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def share_field(default: float, description: str) -> Any:
    """A field holding a share or probability: a float from 0 to 1."""
    return Field(default=default, ge=0, le=1, description=description)
