"""Entry point for Dagster tools: ``dagster dev -m rd_pipeline.definitions``.

The config is chosen by $RD_CONFIG (a YAML file) or $RD_PRESET (a preset name), else the `tiny` preset; it is
resolved once, when this module is loaded.
"""

from rd_pipeline.defs import build_definitions

defs = build_definitions()

__all__ = ["defs"]
