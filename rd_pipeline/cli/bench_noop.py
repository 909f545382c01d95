"""A no-op re-materialization of the whole tiny graph: its time, where the time goes, and its generation requests.

Materializes every asset of the ``tiny`` preset once into a fresh ``RD_HOME`` (``materialize_graph``, as ``rd
materialize`` does), then times a second materialization with nothing changed. Its generation requests are counted
two ways: the ``*samples_generated`` and ``generation_requests`` metadata of every materialization the second pass
made, and the rows of every journal before and after. The second pass is broken down by Dagster run and by step
(start and end times from the instance's run and step records); the time outside the runs is the teacher
observation and building each in-process job. Those passes run in the process that made the first one, so
libraries are already imported; ``rd materialize`` in a new process (what a user re-runs) is timed as well. With
``--profile`` a third no-op pass runs under cProfile and the
most expensive ``rd_pipeline`` functions (cumulative time) are listed. Writes ``bench-results/noop.json``.

    python -m rd_pipeline.cli.bench_noop [--profile] [--keep DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET_SECONDS = 30.0
MODEL_ASSETS = ("sft_student", "reward_model", "rl_student")


def journal_rows(rd_home: Path) -> int:
    """Completed samples across every journal file under ``rd_home``."""
    total = 0
    for path in sorted((rd_home / "journal").glob("*.sqlite")):
        with sqlite3.connect(path) as connection:
            total += connection.execute("SELECT count(*) FROM completions").fetchone()[0]
    return total


def generation_counts(results) -> dict[str, int]:
    """Sum of generation metadata over every materialization in ``results``, and model assets trained now."""
    counts: dict[str, int] = defaultdict(int)
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            for key, entry in materialization.metadata.items():
                if key.endswith("samples_generated") or key == "generation_requests":
                    counts[key] += int(entry.value or 0)
                if key == "trained_now" and entry.value:
                    counts["models_trained"] += 1
    return dict(counts)


def run_breakdown(instance, results) -> list[dict]:
    """Per Dagster run: its assets, partition, duration, and each step's duration."""
    rows = []
    for result in results:
        record = instance.get_run_record_by_id(result.run_id)
        run = record.dagster_run
        steps = {
            stats.step_key: round(stats.end_time - stats.start_time, 3)
            for stats in instance.get_run_step_stats(result.run_id)
            if stats.start_time and stats.end_time
        }
        rows.append(
            {
                "run_id": result.run_id,
                "partition": run.tags.get("dagster/partition"),
                "seconds": round(record.end_time - record.start_time, 3),
                "steps": steps,
            }
        )
    return rows


def profile_top(profiler: cProfile.Profile, limit: int) -> list[dict]:
    """The ``rd_pipeline`` functions with the largest cumulative time."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, function), (_, calls, _, cumulative, _) in stats.stats.items():
        if "/rd_pipeline/" in filename and "/rd_pipeline_tests/" not in filename:
            short = filename.split("/rd_pipeline/", 1)[1]
            rows.append(
                {"function": f"{short}:{line} {function}", "calls": calls, "seconds": round(cumulative, 3)}
            )
    rows.sort(key=lambda row: row["seconds"], reverse=True)
    return rows[:limit]


def fresh_process_seconds(rd_home: Path) -> float:
    """Wall time of ``rd materialize --preset tiny`` in a new Python process on ``rd_home``."""
    env = dict(os.environ, RD_HOME=str(rd_home), RD_PRESET="tiny", DAGSTER_HOME=str(rd_home / "dagster"))
    command = [sys.executable, "-m", "rd_pipeline.cli", "materialize", "--preset", "tiny"]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="a third no-op pass under cProfile")
    parser.add_argument("--top", type=int, default=25, help="profiled functions to list")
    parser.add_argument(
        "--keep", type=Path, default=None, help="use (and keep) this RD_HOME instead of a temp dir"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "noop.json")
    return parser.parse_args(argv)


def timed_passes(config, resource, rd_home: Path) -> dict:
    """A first materialization, then a timed no-op one with the journal rows counted before and after."""
    from rd_pipeline.defs.run import instance_for, materialize_graph

    start = time.perf_counter()
    first = materialize_graph(config, resource, log_level="WARNING")
    first_seconds = time.perf_counter() - start
    if not all(result.success for result in first):
        raise SystemExit("the first materialization failed")
    instance = instance_for(config)
    rows_before = journal_rows(rd_home)
    start = time.perf_counter()
    second = materialize_graph(config, resource, log_level="WARNING")
    noop_seconds = time.perf_counter() - start
    rows_after = journal_rows(rd_home)
    if not all(result.success for result in second):
        raise SystemExit("the no-op materialization failed")
    return {
        "first_seconds": first_seconds,
        "noop_seconds": noop_seconds,
        "runs": run_breakdown(instance, second),
        "counts": generation_counts(second),
        "rows_before": rows_before,
        "rows_after": rows_after,
    }


def noop_results(passes: dict) -> dict:
    """The JSON result of the no-op pass: time inside and outside runs, per asset, generation requests."""
    runs, counts, noop_seconds = passes["runs"], passes["counts"], passes["noop_seconds"]
    in_runs = sum(run["seconds"] for run in runs)
    per_asset: dict[str, float] = defaultdict(float)
    for run in runs:
        for step, seconds in run["steps"].items():
            per_asset[step] += seconds
    requests = counts.get("generation_requests", 0) + sum(
        v for k, v in counts.items() if k.endswith("samples_generated")
    )
    results = {
        "benchmark": "noop_rematerialization",
        "preset": "tiny",
        "first_materialization_seconds": round(passes["first_seconds"], 2),
        "noop_seconds": round(noop_seconds, 2),
        "target_seconds": TARGET_SECONDS,
        "runs": len(runs),
        "seconds_in_runs": round(in_runs, 2),
        "seconds_outside_runs": round(noop_seconds - in_runs, 2),
        "seconds_per_asset": {k: round(v, 2) for k, v in sorted(per_asset.items(), key=lambda kv: -kv[1])},
        "generation_metadata": counts,
        "generation_requests": requests,
        "journal_rows_before": passes["rows_before"],
        "journal_rows_after": passes["rows_after"],
        "load_average_at_end": os.getloadavg()[0],
        "run_detail": runs,
    }
    unchanged = passes["rows_after"] == passes["rows_before"]
    results["meets_target"] = noop_seconds < TARGET_SECONDS and requests == 0 and unchanged
    return results


def profiled_pass(config, resource, top: int) -> dict:
    """A third no-op pass under cProfile: its time and the costliest ``rd_pipeline`` functions."""
    from rd_pipeline.defs.run import materialize_graph

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    materialize_graph(config, resource, log_level="WARNING")
    profiler.disable()
    return {
        "profiled_noop_seconds": round(time.perf_counter() - start, 2),
        "profile_top": profile_top(profiler, top),
    }


def print_results(results: dict, passes: dict, rows_before_cli: int) -> None:
    """What the no-op pass cost, where the time went, and the verdict."""
    noop_seconds, in_runs = passes["noop_seconds"], sum(run["seconds"] for run in passes["runs"])
    print(
        f"tiny graph: first materialization {passes['first_seconds']:.1f} s; no-op re-run {noop_seconds:.1f} s"
    )
    print(
        f"  as `rd materialize` in a new process: {results['noop_new_process_seconds']:.1f} s, journal rows "
        f"{rows_before_cli} -> {results['journal_rows_after_new_process']}"
    )
    print(
        f"  {len(passes['runs'])} Dagster runs: {in_runs:.1f} s inside runs, {noop_seconds - in_runs:.1f} s outside"
    )
    print(f"  {'asset (summed over partitions)':<34}{'seconds':>8}")
    for asset, seconds in results["seconds_per_asset"].items():
        print(f"  {asset:<34}{seconds:>8.2f}")
    print(f"  generation metadata: {passes['counts']}")
    print(
        f"  journal rows {passes['rows_before']} -> {passes['rows_after']}; generation requests "
        f"{results['generation_requests']}"
    )
    if "profile_top" in results:
        print(f"  profiled no-op pass {results['profiled_noop_seconds']:.1f} s; top rd_pipeline functions:")
        for row in results["profile_top"]:
            print(f"    {row['seconds']:>7.2f} s {row['calls']:>6}x {row['function']}")
    verdict = "meets" if results["meets_target"] else "misses"
    print(f"no-op re-run {verdict} the target (< {TARGET_SECONDS:.0f} s, 0 requests)")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    holder = None
    if args.keep is None:
        holder = tempfile.TemporaryDirectory(prefix="rd-noop-")
        rd_home = Path(holder.name)
    else:
        rd_home = args.keep.resolve()
    os.environ["RD_HOME"] = str(rd_home)
    os.environ["RD_PRESET"] = "tiny"
    os.environ.pop("RD_CONFIG", None)

    from rd_pipeline.config import load_preset
    from rd_pipeline.defs.resources import PipelineResource

    config, resource = load_preset("tiny"), PipelineResource(preset="tiny")
    passes = timed_passes(config, resource, rd_home)
    results = noop_results(passes)
    rows_before_cli = journal_rows(rd_home)
    results["noop_new_process_seconds"] = round(fresh_process_seconds(rd_home), 2)
    results["journal_rows_after_new_process"] = journal_rows(rd_home)
    results["meets_target"] = (
        results["meets_target"] and results["journal_rows_after_new_process"] == rows_before_cli
    )
    if args.profile:
        results.update(profiled_pass(config, resource, args.top))
    print_results(results, passes, rows_before_cli)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if holder is not None:
        holder.cleanup()


if __name__ == "__main__":
    main()
