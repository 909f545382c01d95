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


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    import re

    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_readme_is_a_short_front_door_and_every_doc_link_resolves() -> None:
    import re

    readme = REPO_ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 150
    broken = []
    for page in [readme, *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small() -> None:
    """No module in rd_pipeline/ over 400 lines, no function or method over 60 (decorators not counted)."""
    import ast

    too_long = []
    for path in sorted((REPO_ROOT / "rd_pipeline").rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(REPO_ROOT).as_posix()
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source, name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}::{node.name} (line {node.lineno}): {length} lines")
    assert not too_long, too_long
