"""The layers of the architecture hold: `lint-imports` checks the contracts in pyproject.toml (layers, Dagster only
in defs/, no cycles), lazy imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    checked = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout[-6000:] + checked.stderr[-2000:]
    assert "0 broken" in checked.stdout
