"""The DuckDB store: idempotent partition replacement, reads, and writers in several processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from rd_pipeline.store import Store, StoreCorruptError, StoreError


def _rows(benchmark: str, n: int, text: str = "x") -> list[dict]:
    return [
        {
            "benchmark": benchmark,
            "prompt_id": f"p{i}",
            "temperature": 0.7,
            "sample_index": i % 4,
            "response": f"{text}{i}",
            "input_tokens": 3,
            "output_tokens": 5,
            "teacher_version": "v1",
        }
        for i in range(n)
    ]


def test_replace_is_idempotent_and_partitioned(tmp_path: Path):
    store = Store(tmp_path / "rd.duckdb")
    assert store.read("teacher_responses") == [] and store.count("teacher_responses") == 0
    store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 10))
    store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 10))
    store.replace_partition("teacher_responses", "mmlu_pro", _rows("mmlu_pro", 3))
    assert store.count("teacher_responses", "gsm8k") == 10
    assert store.count("teacher_responses") == 13
    store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 2, text="y"))
    assert [r["response"] for r in store.read("teacher_responses", "gsm8k")] == ["y0", "y1"]
    assert store.count("teacher_responses", "mmlu_pro") == 3
    store.replace_partition("teacher_responses", "gsm8k", [])
    assert store.count("teacher_responses", "gsm8k") == 0


def test_bad_rows_fail_clearly(tmp_path: Path):
    store = Store(tmp_path / "rd.duckdb")
    with pytest.raises(StoreError, match="unknown table 'nope'"):
        store.replace_partition("nope", "gsm8k", [])
    bad = _rows("gsm8k", 2)
    del bad[1]["response"]
    with pytest.raises(StoreError, match=r"row 1 for teacher_responses lacks columns \['response'\]"):
        store.replace_partition("teacher_responses", "gsm8k", bad)
    assert store.count("teacher_responses") == 0


def test_latest_version_and_filters(tmp_path: Path):
    store = Store(tmp_path / "rd.duckdb")
    for version in ("a", "b"):
        store.append(
            "asset_versions",
            [
                {
                    "benchmark": "gsm8k",
                    "asset": "pseudo_labels",
                    "data_version": version,
                    "run_id": "r",
                    "teacher_version": "t",
                    "upstream": "{}",
                    "recorded_at": __import__("datetime").datetime.now(),
                }
            ],
        )
    assert store.latest_version("pseudo_labels", "gsm8k")["data_version"] == "b"
    assert store.latest_version("pseudo_labels", "mmlu_pro") is None


def _write_partition(path: str, benchmark: str) -> None:
    store = Store(Path(path))
    for _ in range(5):
        store.replace_partition("teacher_responses", benchmark, _rows(benchmark, 200))


def test_writers_in_parallel_processes_lose_nothing(tmp_path: Path):
    path = str(tmp_path / "rd.duckdb")
    benchmarks = ["gsm8k", "gsm_plus", "mmlu_pro", "alpaca_eval"]
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_partition, args=(path, b)) for b in benchmarks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    store = Store(Path(path))
    for benchmark in benchmarks:
        assert store.count("teacher_responses", benchmark) == 200


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_file_fails_naming_it_and_the_way_back(tmp_path: Path, damage: str):
    path = tmp_path / "rd.duckdb"
    store = Store(path)
    store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 20_000))
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 2])
    for operation in (store.verify, lambda: store.read("teacher_responses")):
        with pytest.raises(StoreCorruptError) as failure:
            operation()
        message = str(failure.value)
        assert message.startswith(f"{path} is not a readable DuckDB database (") and "`rd rebuild`" in message
    with pytest.raises(StoreCorruptError):
        store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 1))
    assert path.read_bytes() == (b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 2])


_HOLD_READ_ONLY = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1], read_only=True)
print(connection.execute('SELECT count(*) FROM teacher_responses').fetchone()[0], flush=True)
sys.stdin.readline()
connection.close()
"""


def test_reads_are_read_only_and_run_beside_another_process_reading(tmp_path: Path, monkeypatch):
    """Reads open the file read-only: they write nothing, and another process reading it does not block them
    (a read-write connection would wait for that process's lock, then fail)."""
    import subprocess
    import sys

    import duckdb

    import rd_pipeline.store.database as store_module

    store = Store(tmp_path / "rd.duckdb")
    store.replace_partition("teacher_responses", "gsm8k", _rows("gsm8k", 3))
    with pytest.raises(duckdb.Error, match="read-only"):
        store._run(lambda connection: connection.execute("CREATE TABLE scratch (a INTEGER)"), read_only=True)

    monkeypatch.setattr(store_module, "_LOCK_WAIT_S", 2.0)
    reader = subprocess.Popen(
        [sys.executable, "-c", _HOLD_READ_ONLY, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "3"  # the other process holds its connection open
        assert [row["response"] for row in store.read("teacher_responses", "gsm8k")] == ["x0", "x1", "x2"]
        assert store.count("teacher_responses") == 3 and store.verify() == ["teacher_responses"]
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0
