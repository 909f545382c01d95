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


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in conftest.py (fixtures) and rd_pipeline_tests/support/, never in a test module."""
    import ast

    offenders = []
    for path in sorted((REPO_ROOT / "rd_pipeline_tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[-1].startswith("test_")]
    assert not offenders, offenders
