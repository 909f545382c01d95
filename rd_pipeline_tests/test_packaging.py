"""The built wheel: the `rd_pipeline` package and its data files, nothing else (no tests, no scripts)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_package(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", ".rd", "build", "*.egg-info", "__pycache__", "test-*"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("rd_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"rd_pipeline", next(n for n in top_level if n.endswith(".dist-info"))}
    assert "rd_pipeline/definitions.py" in names
    assert any(name.startswith("rd_pipeline/presets/") and name.endswith(".yaml") for name in names)
