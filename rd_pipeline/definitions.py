"""Entry point for Dagster tools: ``dagster dev -m rd_pipeline.definitions``."""

from rd_pipeline.defs import defs

__all__ = ["defs"]
