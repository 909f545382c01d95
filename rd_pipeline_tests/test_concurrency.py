"""Four benchmark partitions materialized at once, as separate Dagster runs on one DuckDB file and one journal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rd_pipeline.config import PathsConfig, load_preset
from rd_pipeline.defs.run import dagster_home
from rd_pipeline.store import Store

ASSETS = "benchmark_prompts,teacher_responses,pseudo_labels"


@pytest.mark.slow
def test_four_partitions_in_parallel_lose_no_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = load_preset("tiny")
    env = dict(os.environ, RD_HOME=str(tmp_path), RD_PRESET="tiny", OMP_NUM_THREADS="1")
    env.pop("RD_CONFIG", None)
    home = dagster_home(config.model_copy(update={"paths": PathsConfig(rd_home=str(tmp_path))}))
    env["DAGSTER_HOME"] = str(home)
    # Create the instance's storage once; the four runs then share it.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dg.DagsterInstance.from_config(str(home)).dispose()
    # Build the shared tiny checkpoint once, so the runs race on the store and journal rather than the build lock.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from rd_pipeline.models import resolve_model; "
            f"resolve_model('tiny-random', Path({str(tmp_path)!r}))",
        ],
        check=True,
        env=env,
        timeout=300,
    )
    runs = {
        benchmark: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "rd_pipeline.definitions",
                "--select",
                ASSETS,
                "--partition",
                benchmark,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for benchmark in config.benchmark_names
    }
    outputs = {benchmark: run.communicate(timeout=900)[0] for benchmark, run in runs.items()}
    for benchmark, run in runs.items():
        assert run.returncode == 0, f"{benchmark} failed:\n{outputs[benchmark][-4000:]}"
        assert "RUN_SUCCESS" in outputs[benchmark]

    store = Store(tmp_path / "rd.duckdb")
    per_prompt = config.sampling.n * len(config.sampling.temperatures)
    for benchmark in config.benchmark_names:
        prompts = store.read("benchmark_prompts", benchmark, split="train")
        assert len(prompts) == config.benchmark(benchmark).train_size
        responses = store.read("teacher_responses", benchmark)
        keys = [(r["prompt_id"], r["temperature"], r["sample_index"]) for r in responses]
        assert len(keys) == len(set(keys)) == len(prompts) * per_prompt
        assert store.count("pseudo_labels", benchmark) == len(keys)
