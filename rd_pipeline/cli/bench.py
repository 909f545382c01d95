"""`rd bench` (``make bench``): every benchmark module as a subprocess, then one summary table.

Runs, each in its own process (so one's memory and threads do not affect the next):

- ``generation``: sampling throughput of the transformers backend on SmolLM2 against plain batched ``generate``,
  a per-sample loop and the matmul compute limit (``rd_pipeline.cli.bench_generation``);
- ``noop``: a no-op re-materialization of the whole tiny graph, its time and generation requests
  (``rd_pipeline.cli.bench_noop``);
- ``duckdb``: DuckDB write throughput for 100k response rows (``rd_pipeline.cli.bench_duckdb``);
- ``api``: the openai backend's throughput against a local server with fixed latency (``tools.bench_api``, a
  developer tool: it needs the repository's test server, so it runs when ``rd bench`` is started from the root of
  a checkout and is skipped, saying so, elsewhere).

Each writes its own JSON under ``bench-results/`` in the current directory; this one adds wall time and peak RSS
per subprocess (from ``wait4``), checks the targets and writes ``bench-results/summary.json``. ``--quick`` skips
the slow ones (generation and noop); ``--summarize-only`` rebuilds the table and summary from the JSON files
already there (wall time and peak RSS then come from the previous summary, where it has them). The machine's load
average is recorded: on a shared machine compare ratios, not rates.

    rd bench [--quick] [--only NAME ...] [--summarize-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path("bench-results")  # under the current directory, where each benchmark writes its JSON


@dataclass(frozen=True)
class Bench:
    """One benchmark module, whether it is slow, and how to read its headline numbers from its JSON."""

    name: str
    module: str
    args: tuple[str, ...]
    output: str
    slow: bool
    summarize: Callable[[dict], list[tuple[str, str, str, bool | None]]]


def _generation(data: dict) -> list[tuple[str, str, str, bool | None]]:
    ours = data["ours"]
    return [
        (
            "samples/s: ours | plain | loop",
            f"{ours['samples_per_s']:.2f} | {data['plain_generate']['samples_per_s']:.2f} | "
            f"{data['per_sample_loop']['samples_per_s']:.2f}",
            "",
            None,
        ),
        (
            "ours / plain generate",
            f"{data['ours_vs_plain_samples']:.2f}x",
            ">= 0.9x",
            data["ours_vs_plain_samples"] >= 0.9,
        ),
        (
            "ours / per-sample loop",
            f"{data['ours_vs_loop_samples']:.1f}x",
            ">= 5x",
            data["ours_vs_loop_samples"] >= 5,
        ),
        (
            "ours, share of compute limit",
            f"{100 * data['ours_fraction_of_limit']:.1f}%",
            f"limit {data['machine_limit_tokens_per_s']:.0f} tok/s",
            None,
        ),
    ]


def _noop(data: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = [
        ("no-op re-run of tiny graph", f"{data['noop_seconds']:.1f} s", "< 30 s", data["noop_seconds"] < 30),
        ("  generation requests", str(data["generation_requests"]), "0", data["generation_requests"] == 0),
        (
            "  journal rows before -> after",
            f"{data['journal_rows_before']} -> {data['journal_rows_after']}",
            "unchanged",
            data["journal_rows_before"] == data["journal_rows_after"],
        ),
        ("  first materialization", f"{data['first_materialization_seconds']:.1f} s", "", None),
    ]
    if "noop_new_process_seconds" in data:
        rows.insert(
            1, ("  as `rd materialize`, new process", f"{data['noop_new_process_seconds']:.1f} s", "", None)
        )
    return rows


def _duckdb(data: dict) -> list[tuple[str, str, str, bool | None]]:
    paths = data["paths"]
    rows = []
    for name in (
        "replace_partition (list of dicts)",
        "replace_partition (Arrow table)",
        "append (list of dicts)",
    ):
        rate = paths[name]["rows_per_s"]
        rows.append((name, f"{rate:,} rows/s", ">= 100,000", rate >= 100_000))
    return rows


def _api(data: dict) -> list[tuple[str, str, str, bool | None]]:
    return [
        (
            f"api concurrency {row['concurrency']}",
            f"{row['requests_per_s']:.1f} req/s",
            f"{100 * row['fraction_of_ideal']:.0f}% of ideal {row['ideal_requests_per_s']:.0f}",
            None,
        )
        for row in data["results"]
    ]


BENCHES = [  # quick ones first, so an interrupted run still leaves their results
    Bench("duckdb", "rd_pipeline.cli.bench_duckdb", (), "duckdb.json", False, _duckdb),
    Bench("api", "tools.bench_api", (), "api.json", False, _api),
    Bench("generation", "rd_pipeline.cli.bench_generation", (), "generation.json", True, _generation),
    Bench("noop", "rd_pipeline.cli.bench_noop", ("--profile",), "noop.json", True, _noop),
]


def missing_files(bench: Bench) -> list[str]:
    """The files a benchmark from the repository checkout (``tools.*``) needs under the current directory and that
    are not there; empty for the benchmarks shipped in this package."""
    if not bench.module.startswith("tools."):
        return []
    needed = [bench.module.replace(".", "/") + ".py", "rd_pipeline_tests/support/fault_server.py"]
    return [path for path in needed if not Path(path).is_file()]


def run(bench: Bench) -> dict:
    """Run one benchmark module; its exit code, wall time, peak RSS and the JSON it wrote."""
    output = RESULTS / bench.output
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", bench.module, *bench.args]
    print(f"\n=== {bench.name}: python {' '.join(command[1:])}", flush=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    record = {
        "exit_code": process.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "load_average_at_start": load,
    }
    if process.returncode == 0 and output.is_file():
        record["results"] = json.loads(output.read_text())
    return record


def previous(bench: Bench, earlier: dict) -> dict | None:
    """A record from the JSON ``bench`` already wrote, with wall time and RSS from an earlier summary if known."""
    output = RESULTS / bench.output
    if not output.is_file():
        return None
    record = {"exit_code": 0, "seconds": None, "peak_rss_mib": None, "load_average_at_start": None}
    record.update({k: v for k, v in earlier.get(bench.name, {}).items() if k in record})
    record["results"] = json.loads(output.read_text())
    return record


def print_table(records: dict[str, dict]) -> None:
    print(f"\n{'benchmark':<36}{'result':>30}  {'target':<22}{'ok':<4}")
    for name, record in records.items():
        bench = next(b for b in BENCHES if b.name == name)
        head = name
        if record["seconds"] is not None:
            head += f" ({record['seconds']:.0f} s, peak RSS {record['peak_rss_mib']:.0f} MiB)"
        print(head)
        if "results" not in record:
            print(f"  failed with exit code {record['exit_code']}")
            continue
        for label, value, target, ok in bench.summarize(record["results"]):
            mark = "" if ok is None else ("yes" if ok else "NO")
            print(f"  {label:<34}{value:>30}  {target:<22}{mark:<4}")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slow benchmarks (generation, noop)")
    parser.add_argument("--summarize-only", action="store_true", help="summarize the JSON already written")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run only these")
    args = parser.parse_args(argv)

    selected = [b for b in BENCHES if (not args.only or b.name in args.only) and not (args.quick and b.slow)]
    for bench in [b for b in selected if missing_files(b)]:
        print(
            f"{bench.name}: skipped, it runs from the root of a repository checkout "
            f"({', '.join(missing_files(bench))} not found under {Path.cwd()})"
        )
        selected.remove(bench)
    if args.summarize_only:
        summary_file = RESULTS / "summary.json"
        earlier = json.loads(summary_file.read_text())["benchmarks"] if summary_file.is_file() else {}
        found = {bench.name: previous(bench, earlier) for bench in selected}
        records = {name: record for name, record in found.items() if record is not None}
    else:
        records = {bench.name: run(bench) for bench in selected}
    print_table(records)
    summary = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "note": "shared, noisy machine: compare ratios, not absolute rates",
        "benchmarks": {
            name: {
                **{k: v for k, v in record.items() if k != "results"},
                "headline": [
                    {"metric": label, "value": value, "target": target, "ok": ok}
                    for label, value, target, ok in next(b for b in BENCHES if b.name == name).summarize(
                        record["results"]
                    )
                ]
                if "results" in record
                else [],
            }
            for name, record in records.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'summary.json'} (details in the other files there)")
    if any(record["exit_code"] != 0 for record in records.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
