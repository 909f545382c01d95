"""The benchmark scripts that are quick at small sizes still run end to end (they are not part of the tests'
behaviour checks, so nothing else would notice when an API change breaks them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_script(*arguments: str) -> None:
    """Run a script from the repository root; fail with its error output when it fails."""
    result = subprocess.run(
        [sys.executable, *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_api_bench_runs_against_the_fault_server(tmp_path: Path) -> None:
    output = tmp_path / "api.json"
    _run_script(
        "scripts/bench_api.py",
        "--latency-ms",
        "20",
        "--concurrency",
        "1",
        "4",
        "--rounds",
        "2",
        "--output",
        str(output),
    )
    rows = json.loads(output.read_text())["results"]
    assert [(row["concurrency"], row["requests"]) for row in rows] == [(1, 2), (4, 8)]
    assert all(0 < row["fraction_of_ideal"] <= 1.05 for row in rows)


def test_duckdb_bench_runs_at_a_small_size(tmp_path: Path) -> None:
    output = tmp_path / "duckdb.json"
    _run_script(
        "scripts/bench_duckdb.py",
        "--rows",
        "2000",
        "--repeats",
        "1",
        "--append-chunk",
        "500",
        "--out",
        str(output),
    )
    written = json.loads(output.read_text())
    assert written["rows"] == 2000 and written["paths"]
