"""Where the built-in benchmark samples live."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
