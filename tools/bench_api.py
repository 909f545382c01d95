"""Throughput of the openai backend against a local server that answers every request after a fixed latency.

Starts the test fault server (``rd_pipeline_tests.support``) as a separate process (no faults); for each
concurrency level sends ``rounds * concurrency`` single-sample requests through ``OpenAIGenerator.generate``
(fresh journal each time) and compares requests per second with the ideal ``concurrency / latency``. Prints a
table and writes ``bench-results/api.json``.

    python -m tools.bench_api [--latency-ms 200] [--concurrency 1 8 32 64] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rd_pipeline.config import ApiConfig, ModelConfig
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.openai_backend import OpenAIGenerator
from rd_pipeline_tests.support.fault_server import server_process


def measure(base_url: str, concurrency: int, rounds: int, latency_s: float) -> dict[str, float]:
    count = rounds * concurrency
    api = ApiConfig(base_url=base_url, model="fake-model", api_key_env=None, max_concurrency=concurrency)
    with tempfile.TemporaryDirectory() as journal_dir:
        generator = OpenAIGenerator(ModelConfig(ref="bench", backend="openai", api=api), Path(journal_dir))
        generator.observe_identity()  # GET /models before timing
        params = SamplingParams(temperature=0.7, n=1, max_new_tokens=64, seed=concurrency)
        requests = [
            GenerationRequest(f"r{i}", ({"role": "user", "content": f"benchmark prompt {i}"},), params)
            for i in range(count)
        ]
        started = time.perf_counter()
        completions, stats = generator.generate(requests)
        elapsed = time.perf_counter() - started
        generator.close()
    if len(completions) != count or stats.backend_requests != count:
        raise RuntimeError(
            f"expected {count} answers, got {len(completions)} ({stats.backend_requests} requests)"
        )
    throughput = count / elapsed
    ideal = concurrency / latency_s
    return {
        "concurrency": concurrency,
        "requests": count,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(throughput, 2),
        "ideal_requests_per_s": round(ideal, 2),
        "fraction_of_ideal": round(throughput / ideal, 3),
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=30, help="requests per concurrency slot")
    parser.add_argument("--output", type=Path, default=Path("bench-results") / "api.json")
    args = parser.parse_args(argv)

    with server_process("--latency-ms", str(args.latency_ms)) as (_, base_url):
        rows = [measure(base_url, c, args.rounds, args.latency_ms / 1000.0) for c in args.concurrency]

    print(f"openai backend vs a local server answering after {args.latency_ms:g} ms")
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'of ideal':>8}")
    for row in rows:
        print(
            f"{row['concurrency']:>11} {row['requests']:>8} {row['seconds']:>8.2f} {row['requests_per_s']:>8.1f}"
            f" {row['ideal_requests_per_s']:>8.1f} {row['fraction_of_ideal']:>8.1%}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "api_backend_throughput",
        "latency_ms": args.latency_ms,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
