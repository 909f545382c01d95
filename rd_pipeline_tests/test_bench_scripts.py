"""`rd bench` and the benchmarks that are quick at small sizes: they still run end to end (they are not part of the
tests' behaviour checks, so nothing else would notice when an API change breaks them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rd_pipeline.cli import main as rd_main

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_script(*arguments: str) -> None:
    """Run ``python ARGUMENTS`` from the repository root; fail with its error output when it fails."""
    result = subprocess.run(
        [sys.executable, *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_api_bench_runs_against_the_fault_server(tmp_path: Path) -> None:
    output = tmp_path / "api.json"
    _run_script(
        "-m",
        "tools.bench_api",
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
        "-m",
        "rd_pipeline.cli.bench_duckdb",
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


def test_rd_bench_help_lists_its_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        rd_main(["bench", "--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: rd bench ")
    assert all(option in printed for option in ("--quick", "--only", "--summarize-only")), printed


def test_rd_bench_outside_a_checkout_skips_the_api_bench_and_writes_under_the_current_directory(
    tmp_path: Path,
) -> None:
    """The api bench needs the repository's test server (tools/, rd_pipeline_tests/): elsewhere it is skipped,
    saying why, and the summary goes to ./bench-results/."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    ran = subprocess.run(
        [sys.executable, "-m", "rd_pipeline.cli", "bench", "--only", "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "api: skipped, it runs from the root of a repository checkout (tools/bench_api.py, " in ran.stdout
    assert json.loads((tmp_path / "bench-results" / "summary.json").read_text())["benchmarks"] == {}
