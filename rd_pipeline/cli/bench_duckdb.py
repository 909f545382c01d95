"""DuckDB write throughput of ``Store`` for teacher-response rows.

Builds ``--rows`` rows in the ``teacher_responses`` schema with realistic responses (about 300 characters of
varied text each), then times, on a fresh database file each:

- ``replace_partition`` with a list of dicts (what the steps pass), split into the dict-to-Arrow conversion and the
  database write;
- ``replace_partition`` with a ready ``pyarrow.Table``;
- ``replace_partition`` again over the existing partition (delete, then insert);
- ``append`` with a list of dicts, whole and in ``--append-chunk`` row pieces.

The best of ``--repeats`` runs counts. Prints rows/s for each and writes ``bench-results/duckdb.json``.

    python -m rd_pipeline.cli.bench_duckdb [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from rd_pipeline.store import SCHEMAS, Store

TARGET_ROWS_PER_S = 100_000
WORDS = (
    "the answer is so first then total each apples pencils hours minutes per we multiply divide add subtract "
    "remaining left cost dollars price percent of step because therefore which gives equals"
).split()


def make_rows(count: int, seed: int = 0) -> list[dict]:
    """``count`` teacher-response rows: 8 samples per prompt, 2 temperatures, ~300-character responses."""
    rng = random.Random(seed)
    vocabulary = WORDS * 6 + [str(number) for number in range(1, 40)]
    rows = []
    for i in range(count):
        words = rng.choices(vocabulary, k=rng.randint(44, 60))
        rows.append(
            {
                "benchmark": "gsm8k",
                "prompt_id": f"gsm8k-train-{i // 16:06d}",
                "temperature": (0.6, 1.0)[(i // 8) % 2],
                "sample_index": i % 8,
                "response": " ".join(words) + f". The answer is {rng.randint(1, 500)}.",
                "input_tokens": rng.randint(60, 200),
                "output_tokens": rng.randint(50, 120),
                "teacher_version": "3f9c2a1b7d4e6f80",
            }
        )
    return rows


def best_seconds(
    action: Callable[[Store], None], repeats: int, prepare: Callable[[Store], None] | None = None
) -> float:
    """Fastest of ``repeats`` timed calls of ``action`` on a fresh store (``prepare`` runs untimed first)."""
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            store = Store(Path(directory) / "bench.duckdb")
            if prepare is not None:
                prepare(store)
            start = time.perf_counter()
            action(store)
            best = min(best, time.perf_counter() - start)
    return best


def to_arrow(rows: list[dict]) -> pa.Table:
    """The column-wise conversion ``Store`` performs for a list of dicts (``Store._arrow``)."""
    return Store(Path(tempfile.gettempdir()) / "unused.duckdb")._arrow("teacher_responses", rows)


def arrow_schema() -> pa.Schema:
    """The ``teacher_responses`` schema as Arrow types."""
    kinds = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "INTEGER": pa.int32()}
    return pa.schema([(name, kinds[kind]) for name, kind in SCHEMAS["teacher_responses"].items()])


def write_phases(table: pa.Table) -> dict[str, float]:
    """Where one ``replace_partition``-style write spends its time: the same statements, timed one by one."""
    columns = ", ".join(f'"{name}" {kind}' for name, kind in SCHEMAS["teacher_responses"].items())
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round(now - mark, 4)
            mark = now

        connection = duckdb.connect(str(Path(directory) / "phases.duckdb"))
        lap("connect")
        connection.execute(f"CREATE TABLE teacher_responses ({columns})")
        connection.execute("BEGIN TRANSACTION")
        connection.execute("DELETE FROM teacher_responses WHERE benchmark = 'gsm8k'")
        lap("create table, delete")
        connection.register("incoming_rows", table)
        connection.execute("INSERT INTO teacher_responses SELECT * FROM incoming_rows")
        lap("insert from Arrow")
        connection.execute("COMMIT")
        lap("commit (write-ahead log)")
        connection.close()
        lap("close (checkpoint into the file)")
    return phases


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append-chunk", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "duckdb.json")
    return parser.parse_args(argv)


def time_paths(rows: list[dict], table: pa.Table, repeats: int, append_chunk: int) -> dict[str, float]:
    """Best seconds of each write path (and of the dict-to-Arrow conversions) for ``rows``."""
    chunks = [rows[i : i + append_chunk] for i in range(0, len(rows), append_chunk)]

    def replace_dicts(store: Store) -> None:
        store.replace_partition("teacher_responses", "gsm8k", rows)

    def replace_arrow(store: Store) -> None:
        store.replace_partition("teacher_responses", "gsm8k", table)

    def append_dicts(store: Store) -> None:
        store.append("teacher_responses", rows)

    def append_chunks(store: Store) -> None:
        for chunk in chunks:
            store.append("teacher_responses", chunk)

    def fastest(action: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            action()
            best = min(best, time.perf_counter() - start)
        return best

    schema = arrow_schema()
    convert = fastest(lambda: to_arrow(rows))
    convert_typed = fastest(lambda: pa.Table.from_pylist(rows, schema=schema))
    return {
        "replace_partition (list of dicts)": best_seconds(replace_dicts, repeats),
        "  of which dicts -> Arrow": convert,
        "  dicts -> Arrow by Table.from_pylist": convert_typed,
        "replace_partition (Arrow table)": best_seconds(replace_arrow, repeats),
        "replace_partition over existing rows": best_seconds(replace_arrow, repeats, prepare=replace_arrow),
        "append (list of dicts)": best_seconds(append_dicts, repeats),
        f"append ({append_chunk}-row calls)": best_seconds(append_chunks, 1),
    }


def print_results(results: dict, seconds: dict[str, float], chars: float) -> None:
    """The paths' rows/s, the write's phases and the verdict; ``chars``: the mean response length."""
    rows = results["rows"]
    print(f"{rows} teacher_responses rows, responses {chars:.0f} characters on average")
    print(f"{'path':<40}{'seconds':>9}{'rows/s':>12}")
    for name, s in seconds.items():
        print(f"{name:<40}{s:>9.3f}{rows / s:>12,.0f}")
    print(
        "one Arrow write, phase by phase (seconds): "
        + ", ".join(f"{name} {phase:.3f}" for name, phase in results["write_phases_seconds"].items())
    )
    verdict = "meets" if results["meets_target"] else "misses"
    print(f"replace_partition with dicts {verdict} the {TARGET_ROWS_PER_S:,} rows/s target")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    rows = make_rows(args.rows)
    table = to_arrow(rows)
    chars = sum(len(r["response"]) for r in rows) / len(rows)
    seconds = time_paths(rows, table, args.repeats, args.append_chunk)
    results = {
        "benchmark": "duckdb_write_throughput",
        "rows": args.rows,
        "mean_response_chars": round(chars, 1),
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "load_average_at_end": os.getloadavg()[0],
        "paths": {
            name.strip(): {"seconds": round(s, 4), "rows_per_s": round(args.rows / s)}
            for name, s in seconds.items()
        },
    }
    results["write_phases_seconds"] = write_phases(table)
    headline = results["paths"]["replace_partition (list of dicts)"]["rows_per_s"]
    results["meets_target"] = headline >= TARGET_ROWS_PER_S
    print_results(results, seconds, chars)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
