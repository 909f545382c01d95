"""Dagster instance storage in a real PostgreSQL server: the tiny graph, then two partitions as parallel runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rd_pipeline.config import PRESETS_DIR, PathsConfig, load_preset
from rd_pipeline.defs.run import POSTGRES_URL_ENV, dagster_home
from rd_pipeline.store import Store
from rd_pipeline_tests.support.postgres_server import postgres_server, unavailable_reason

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_POSTGRES = unavailable_reason()
PARALLEL_ASSETS = "benchmark_prompts,teacher_responses,pseudo_labels"
PARTITIONS = ("gsm8k", "mmlu_pro")


def test_rd_installs_the_instance_config_for_the_chosen_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_preset("tiny").model_copy(update={"paths": PathsConfig(rd_home=str(tmp_path))})
    monkeypatch.delenv(POSTGRES_URL_ENV, raising=False)
    installed = dagster_home(config) / "dagster.yaml"
    assert list(yaml.safe_load(installed.read_text())["storage"]) == ["sqlite"]
    monkeypatch.setenv(POSTGRES_URL_ENV, "postgresql://u@db.example:5432/dagster")
    dagster_home(config)
    text = installed.read_text()
    storage = yaml.safe_load(text)["storage"]
    assert storage == {"postgres": {"postgres_url": {"env": POSTGRES_URL_ENV}}} and "db.example" not in text
    assert (
        os.environ[POSTGRES_URL_ENV] == "postgresql+psycopg2://u@db.example:5432/dagster"
    )  # the driver installed
    # A file edited by hand is the user's: left alone whatever the environment says.
    installed.write_text(text + "# edited\n")
    monkeypatch.delenv(POSTGRES_URL_ENV)
    dagster_home(config)
    assert installed.read_text().endswith("# edited\n")


@pytest.mark.slow  # the whole tiny graph (about a minute on an idle 2-core CPU), then two partitions at once
@pytest.mark.skipif(NO_POSTGRES is not None, reason=NO_POSTGRES or "")
def test_tiny_graph_and_parallel_partitions_on_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd_home, config_file = tmp_path / "rd", tmp_path / "two.yaml"
    # The tiny preset on two of its benchmarks, to keep the test short.
    tiny = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    tiny["benchmarks"] = [b for b in tiny["benchmarks"] if b["name"] in PARTITIONS]
    config_file.write_text(yaml.safe_dump(tiny))
    with postgres_server() as url:
        env = dict(os.environ, RD_HOME=str(rd_home), RD_CONFIG=str(config_file), OMP_NUM_THREADS="1")
        env[POSTGRES_URL_ENV] = url
        for name in ("RD_PRESET", "DAGSTER_HOME", "RD_GPU_COUNT"):
            env.pop(name, None)
        whole = subprocess.run(
            [sys.executable, "-m", "rd_pipeline.cli", "materialize", "--config", str(config_file)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert whole.returncode == 0, (whole.stdout + whole.stderr)[-4000:]
        home = rd_home / "dagster"
        assert "postgres:" in (home / "dagster.yaml").read_text()

        # Plain Dagster reads the URL as it is: it must name the psycopg2 driver (rd rewrites it for its runs).
        driver_url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        env.update(DAGSTER_HOME=str(home), **{POSTGRES_URL_ENV: driver_url})
        runs = {
            benchmark: subprocess.Popen(
                [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rd_pipeline.definitions"]
                + ["--select", PARALLEL_ASSETS, "--partition", benchmark],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for benchmark in PARTITIONS
        }
        outputs = {benchmark: run.communicate(timeout=600)[0] for benchmark, run in runs.items()}
        for benchmark, run in runs.items():
            assert run.returncode == 0 and "RUN_SUCCESS" in outputs[benchmark], outputs[benchmark][-4000:]

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv(POSTGRES_URL_ENV, driver_url)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
            parallel = [r for r in records if r.dagster_run.tags.get("dagster/partition") in runs][:2]
            # The rd runs of every partition plus the two parallel ones, all in PostgreSQL.
            assert len(records) >= 2 + len(PARTITIONS)
            first, second = sorted(parallel, key=lambda r: r.start_time)
            assert second.start_time < first.end_time, "the two partition runs did not overlap"
            for benchmark in runs:
                materializations = instance.fetch_materializations(
                    dg.AssetRecordsFilter(
                        asset_key=dg.AssetKey("pseudo_labels"), asset_partitions=[benchmark]
                    ),
                    limit=10,
                ).records
                assert len(materializations) == 2  # one from the whole graph, one from the parallel run
    # Nothing went to SQLite instead.
    assert not list(home.rglob("*.db"))
    store = Store(rd_home / "rd.duckdb")
    for benchmark in runs:
        assert store.count("pseudo_labels", benchmark) == store.count("teacher_responses", benchmark) > 0
