"""`rd materialize` with the teacher and judge behind a real local OpenAI-compatible server.

Every run is a real `rd` subprocess on its own RD_HOME: killed with SIGKILL halfway and rerun, scanned for a
fake API key afterwards, checked for token and cost accounting, and stopped by a money budget.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from rd_pipeline.store import SCHEMAS, Store
from rd_pipeline_tests.support.api_pipeline_config import API_MODEL, KEY_ENV, write_api_config
from rd_pipeline_tests.support.fault_server import (
    FaultServer,
    FaultSettings,
    fake_text,
    server_process,
    server_stats,
)

KEY = "sk-rdtest-SECRET-4242-9b1e77c3d05a"
KEY_FRAGMENT = "SECRET-4242"
PRICE_IN, PRICE_OUT = 1000.0, 2000.0  # USD per million tokens: large, so costs are far above rounding
GENERATION = ["benchmark_prompts", "teacher_responses"]


# ---------------------------------------------------------------------------------------------------- helpers


def run_rd(
    config: Path, rd_home: Path, select: list[str], partitions: list[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`rd materialize` in a subprocess with the fake key in its environment; output captured."""
    return subprocess.run(
        rd_command(config, select, partitions),
        env=rd_env(rd_home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rd_command(config: Path, select: list[str], partitions: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rd_pipeline.cli",
        "materialize",
        "--config",
        str(config),
        "--select",
        ",".join(select),
        "--partition",
        ",".join(partitions),
    ]


def rd_env(rd_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RD_CONFIG", "RD_PRESET", "DAGSTER_HOME")}
    env.update(RD_HOME=str(rd_home), PYTHONUNBUFFERED="1")
    env[KEY_ENV] = KEY
    return env


@contextlib.contextmanager
def dagster_instance(rd_home: Path) -> Iterator[dg.DagsterInstance]:
    """The persistent instance a run of `rd` left under RD_HOME/dagster (DAGSTER_HOME set while open)."""
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(rd_home / "dagster")
    try:
        with dg.DagsterInstance.from_config(str(rd_home / "dagster")) as instance:
            yield instance
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


def latest_materialization(rd_home: Path, asset: str, partition: str) -> tuple[str, dict[str, Any]]:
    """(run id, metadata values) of the latest materialization of ``asset[partition]``."""
    with dagster_instance(rd_home) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        assert records, f"no materialization of {asset}[{partition}]"
        event = records[0].asset_materialization
        return records[0].run_id, {key: value.value for key, value in event.metadata.items()}


def run_log_messages(rd_home: Path, run_id: str) -> list[str]:
    with dagster_instance(rd_home) as instance:
        return [entry.user_message for entry in instance.all_logs(run_id)]


def claimed_slots(rd_home: Path) -> list[tuple[str, str]]:
    """(run id, step key) of every claimed slot of the `gpu` pool."""
    with dagster_instance(rd_home) as instance:
        info = instance.event_log_storage.get_concurrency_info("gpu")
        return [(slot.run_id, slot.step_key) for slot in info.claimed_slots]


def journal_rows(rd_home: Path) -> int:
    """Completed samples in every journal under RD_HOME."""
    total = 0
    for path in (rd_home / "journal").glob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(path)) as connection:
            total += connection.execute("SELECT count(*) FROM completions").fetchone()[0]
    return total


def response_keys(rd_home: Path, benchmark: str) -> list[tuple[str, float, int]]:
    rows = Store(rd_home / "rd.duckdb").read("teacher_responses", benchmark)
    return [(r["prompt_id"], r["temperature"], r["sample_index"]) for r in rows]


def expected_keys(rd_home: Path, benchmark: str, temperatures: list[float], n: int) -> set:
    prompts = Store(rd_home / "rd.duckdb").read("benchmark_prompts", benchmark, split="train")
    return {(p["prompt_id"], t, i) for p in prompts for t in temperatures for i in range(n)}


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` whose raw bytes contain ``needle``."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()
    )


def table_values_holding(rd_home: Path, needle: str) -> list[str]:
    """``table.column`` of every DuckDB value containing ``needle`` (the file may store text compressed)."""
    store = Store(rd_home / "rd.duckdb")
    return [
        f"{table}.{column}"
        for table in SCHEMAS
        for row in store.read(table)
        for column, value in row.items()
        if needle in str(value)
    ]


def server_expected_usage(
    rd_home: Path, benchmark: str, temperatures: list[float], n: int
) -> tuple[int, int]:
    """Input and output tokens the fake server bills for one whole request per prompt and temperature."""
    prompts = Store(rd_home / "rd.duckdb").read("benchmark_prompts", benchmark, split="train")
    input_tokens = output_tokens = 0
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt["prompt"]}]
        input_tokens += len(temperatures) * len(prompt["prompt"].split())
        output_tokens += len(temperatures) * sum(len(fake_text(messages, 0, i).split()) for i in range(n))
    return input_tokens, output_tokens


def cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * PRICE_IN + output_tokens * PRICE_OUT) / 1e6


# ---------------------------------------------------------------------------------------------------- kill -9


@pytest.mark.slow  # about 60 s: two `rd` start-ups and 500 ms answers
def test_kill_nine_halfway_then_rerun_completes_without_repeats(tmp_path: Path) -> None:
    """SIGKILL the whole `rd` process group mid-generation; the rerun completes and re-asks only lost requests."""
    rd_home, temperatures, n, concurrency = tmp_path / "rd", [0.7, 1.0], 8, 4
    args = ("--latency-ms", "500", "--fault-rate", "0.1", "--hang-s", "3", "--seed", "3")
    with server_process(*args) as (_, base_url):
        config = write_api_config(
            tmp_path / "api.yaml",
            base_url,
            train_size=16,
            n=n,
            temperatures=temperatures,
            max_concurrency=concurrency,
            timeout_s=2.0,
        )
        with open(tmp_path / "first.log", "w") as log:
            child = subprocess.Popen(
                rd_command(config, GENERATION, ["gsm8k"]),
                env=rd_env(rd_home),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + 180
            while server_stats(base_url)["answered_total"] < 12 and child.poll() is None:
                assert time.monotonic() < deadline, "generation never got going"
                time.sleep(0.05)
            assert child.poll() is None, (
                "the run finished before it could be killed:\n" + (tmp_path / "first.log").read_text()[-3000:]
            )
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        at_kill = server_stats(base_url)
        journaled = journal_rows(rd_home)
        total = 16 * len(temperatures) * n
        assert 0 < journaled < total, f"{journaled} of {total} samples journaled at the kill"

        try:
            rerun = run_rd(config, rd_home, GENERATION, ["gsm8k"], timeout=150)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the rerun hung; `gpu` pool slots held by (run, step): {claimed_slots(rd_home)}")
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        after = server_stats(base_url)

    keys = response_keys(rd_home, "gsm8k")
    assert len(keys) == len(set(keys)) == total
    assert set(keys) == expected_keys(rd_home, "gsm8k", temperatures, n)
    # Everything the killed run had journaled is read back; only the rest is generated.
    _, metadata = latest_materialization(rd_home, "teacher_responses", "gsm8k")
    assert metadata["samples_from_journal"] == journaled
    assert metadata["samples_generated"] == total - journaled
    # A request is answered twice only if its answer was in flight (sent, not yet journaled) at the kill.
    repeated = after["answered_total"] - after["unique_answered"]
    assert after["answered_total"] <= after["unique_answered"] + concurrency
    assert after["max_answers_per_key"] <= 2
    # Every answer that reached a run is in the spend ledger, the killed run's included (journaled with its
    # samples, imported by the rerun); only answers in flight at the kill never arrived.
    counted = sum(row["requests"] for row in Store(rd_home / "rd.duckdb").api_spend())
    assert after["answered_total"] - concurrency <= counted <= after["answered_total"]
    print(
        f"kill -9: answered at kill {at_kill['answered_total']}, in flight {at_kill['in_flight']}, "
        f"journaled {journaled}/{total}; after rerun answered {after['answered_total']}, unique "
        f"{after['unique_answered']}, repeated {repeated}, faults {after['faults']}"
    )


# ---------------------------------------------------------------------------------------------------- secrets


@pytest.fixture(scope="module")
def api_graph(tmp_path_factory: pytest.TempPathFactory):
    """prompts, teacher responses and labels for gsm8k and alpaca_eval, teacher and judge over the API.

    The server accepts only the fake key, so every answered request proves the key was sent.
    """
    root = tmp_path_factory.mktemp("api_graph")
    rd_home = root / "rd"
    with FaultServer(FaultSettings(model=API_MODEL, required_key=KEY)) as server:
        config = write_api_config(
            root / "api.yaml",
            server.base_url,
            benchmarks=("gsm8k", "alpaca_eval"),
            train_size=8,
            n=4,
            temperatures=[0.7, 1.0],
            price_input_per_m=PRICE_IN,
            price_output_per_m=PRICE_OUT,
        )
        result = run_rd(config, rd_home, [*GENERATION, "pseudo_labels"], ["gsm8k", "alpaca_eval"])
        stats = server.stats()
    assert result.returncode == 0, result.stderr[-4000:]
    return rd_home, result, stats


def test_key_is_nowhere_after_a_full_materialization(api_graph) -> None:
    rd_home, result, stats = api_graph
    assert stats["answered_total"] > 0 and stats["faults"] == {}
    dagster_files = {p.relative_to(rd_home).parts[1] for p in (rd_home / "dagster").rglob("*") if p.is_file()}
    assert {"history", "storage"} <= dagster_files, "expected Dagster event logs and compute logs"
    assert list((rd_home / "dagster" / "storage").rglob("compute_logs/*.err"))
    assert list((rd_home / "journal").glob("*.sqlite")) and (rd_home / "rd.duckdb").is_file()
    for needle in (KEY, KEY_FRAGMENT):
        assert files_holding(rd_home, needle.encode()) == []
        assert table_values_holding(rd_home, needle) == []
        assert needle not in result.stdout + result.stderr
    # The scan does look inside these files: the endpoint is in the Dagster logs and the DuckDB tables.
    assert files_holding(rd_home / "dagster", b"api-judge")
    assert table_values_holding(rd_home, "Sample ")


def test_refused_key_fails_naming_endpoint_and_model_not_key(tmp_path: Path) -> None:
    """A 401 whose body echoes the key: the failure names the endpoint and model; the key appears nowhere."""
    rd_home = tmp_path / "rd"
    with FaultServer(FaultSettings(model=API_MODEL, required_key="sk-the-right-one")) as server:
        config = write_api_config(tmp_path / "api.yaml", server.base_url, train_size=4, n=2)
        result = run_rd(config, rd_home, GENERATION, ["gsm8k"])
        stats = server.stats()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert stats["requests"] > 0 and stats["answered_total"] == 0
    endpoint = f"{server.base_url}/chat/completions"
    assert "401" in output and endpoint in output and API_MODEL in output, output[-4000:]
    assert KEY not in output and KEY_FRAGMENT not in output
    assert files_holding(rd_home, KEY_FRAGMENT.encode()) == []
    assert table_values_holding(rd_home, KEY_FRAGMENT) == []
    # Dagster's event log holds the failure, with the endpoint and without the key.
    failure_logs = files_holding(rd_home / "dagster", endpoint.encode())
    assert any(name.startswith("history/runs/") for name in failure_logs), failure_logs
    with dagster_instance(rd_home) as instance:
        failed = [
            r for r in instance.get_run_records() if r.dagster_run.status == dg.DagsterRunStatus.FAILURE
        ]
        assert failed
        events = "\n".join(dg.serialize_value(e) for e in instance.all_logs(failed[0].dagster_run.run_id))
    assert endpoint in events and API_MODEL in events and KEY_FRAGMENT not in events


# ---------------------------------------------------------------------------------------------------- accounting


def test_tokens_and_cost_land_in_metadata_and_duckdb(api_graph) -> None:
    rd_home, _, _ = api_graph
    input_tokens, output_tokens = server_expected_usage(rd_home, "gsm8k", [0.7, 1.0], 4)
    expected_cost = cost(input_tokens, output_tokens)
    assert expected_cost > 0
    run_id, metadata = latest_materialization(rd_home, "teacher_responses", "gsm8k")
    assert (metadata["input_tokens"], metadata["output_tokens"]) == (input_tokens, output_tokens)
    assert metadata["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert metadata["budget_exhausted"] is False
    usage = [
        row
        for row in Store(rd_home / "rd.duckdb").read("generation_usage", "gsm8k")
        if row["asset"] == "teacher_responses" and row["run_id"] == run_id
    ]
    assert len(usage) == 1
    assert (usage[0]["input_tokens"], usage[0]["output_tokens"]) == (input_tokens, output_tokens)
    assert usage[0]["cost_usd"] == pytest.approx(expected_cost, rel=1e-12)
    # The judge's calls are accounted the same way.
    judge_run, judge_meta = latest_materialization(rd_home, "pseudo_labels", "alpaca_eval")
    judged = [
        row
        for row in Store(rd_home / "rd.duckdb").read("generation_usage", "alpaca_eval")
        if row["asset"] == "pseudo_labels" and row["run_id"] == judge_run
    ]
    assert len(judged) == 1 and judged[0]["output_tokens"] > 0
    assert judged[0]["cost_usd"] == pytest.approx(cost(judged[0]["input_tokens"], judged[0]["output_tokens"]))
    assert judge_meta["judge_cost_usd"] == pytest.approx(judged[0]["cost_usd"], abs=1e-6)


# ---------------------------------------------------------------------------------------------------- budget


def test_budget_stops_partway_and_a_larger_budget_completes_without_repeats(tmp_path: Path) -> None:
    rd_home, temperatures, n = tmp_path / "rd", [0.7, 1.0], 4
    total = 16 * len(temperatures) * n
    settings = {"train_size": 16, "n": n, "temperatures": temperatures, "max_new_tokens": 20}
    prices = {"price_input_per_m": PRICE_IN, "price_output_per_m": PRICE_OUT}
    with FaultServer(FaultSettings(model=API_MODEL)) as server:
        small = write_api_config(
            tmp_path / "small.yaml", server.base_url, **settings, **prices, max_budget_usd=2.0
        )
        first = run_rd(small, rd_home, GENERATION, ["gsm8k"])
        assert first.returncode == 1, first.stderr[-4000:]
        store = Store(rd_home / "rd.duckdb")
        [partial] = [u for u in store.read("generation_usage", "gsm8k") if u["asset"] == "teacher_responses"]
        journaled = journal_rows(rd_home)
        answered_first = server.stats()["answered_total"]
        # The partition cut short is not stored as the table's latest version: it lives on only in the journal.
        assert response_keys(rd_home, "gsm8k") == []
        assert store.latest_version("teacher_responses", "gsm8k") is None

        large = write_api_config(
            tmp_path / "large.yaml", server.base_url, **settings, **prices, max_budget_usd=100.0
        )
        second = run_rd(large, rd_home, GENERATION, ["gsm8k"])
        assert second.returncode == 0, second.stderr[-4000:]
        stats = server.stats()

    # The stopped run kept what it had in the journal, said so, and spent no more than its budget.
    assert 0 < journaled == partial["samples_generated"] < total
    assert partial["cost_usd"] <= 2.0
    assert "teacher_responses[gsm8k]: stopped at the API budget limit" in first.stderr
    messages = run_log_messages(rd_home, partial["run_id"])
    assert any("stopped at the budget limit" in message for message in messages)
    # The larger budget completes the table and asks only for what was missing.
    _, complete = latest_materialization(rd_home, "teacher_responses", "gsm8k")
    keys = response_keys(rd_home, "gsm8k")
    assert complete["budget_exhausted"] is False
    assert len(keys) == len(set(keys)) == total
    assert set(keys) == expected_keys(rd_home, "gsm8k", temperatures, n)
    assert complete["samples_from_journal"] == journaled
    assert complete["samples_generated"] == total - journaled
    assert stats["answered_total"] == stats["unique_answered"] == 16 * len(temperatures)
    input_tokens, output_tokens = server_expected_usage(rd_home, "gsm8k", temperatures, n)
    assert partial["cost_usd"] + complete["cost_usd"] == pytest.approx(
        cost(input_tokens, output_tokens), abs=2e-6
    )
    print(
        f"budget: first run {journaled}/{total} samples, {answered_first} requests, ${partial['cost_usd']:.4f}; "
        f"second run {complete['samples_generated']} samples, ${complete['cost_usd']:.4f}"
    )


# ---------------------------------------------------------------------------------------------------- identity


def test_models_listing_outage_keeps_the_teacher_version_and_buys_nothing_again(tmp_path: Path) -> None:
    """GET /models down on a rerun: the last observed identity is kept; without one, nothing is sent."""
    rd_home = tmp_path / "rd"
    with FaultServer(FaultSettings(model=API_MODEL)) as server:
        config = write_api_config(tmp_path / "api.yaml", server.base_url, train_size=4, n=2)
        first = run_rd(config, rd_home, GENERATION, ["gsm8k"])
        assert first.returncode == 0, first.stderr[-4000:]
        _, before = latest_materialization(rd_home, "teacher_responses", "gsm8k")
        answered = server.stats()["answered_total"]

        server.settings.models_status = 503
        rerun = run_rd(config, rd_home, GENERATION, ["gsm8k"])
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        _, after = latest_materialization(rd_home, "teacher_responses", "gsm8k")
        assert after["teacher_version"] == before["teacher_version"]
        assert after["samples_generated"] == 0 and server.stats()["answered_total"] == answered
        assert "keeping the identity last observed" in rerun.stdout + rerun.stderr

        fresh = run_rd(config, tmp_path / "fresh", GENERATION, ["gsm8k"])
        stats = server.stats()
    assert fresh.returncode != 0
    assert "no earlier observation" in fresh.stdout + fresh.stderr, fresh.stderr[-4000:]
    assert stats["requests"] == answered  # the fresh run sent no chat request


@pytest.mark.slow  # about 40 s: three `rd materialize` runs and `rd budget`
def test_budget_holds_over_reruns_of_rd_materialize(tmp_path: Path) -> None:
    """Three `rd materialize` runs (and Dagster's run retries) under one budget spend that budget at most."""
    rd_home, budget = tmp_path / "rd", 1.0
    settings = {"train_size": 16, "n": 4, "temperatures": [0.7, 1.0], "max_new_tokens": 20}
    with FaultServer(FaultSettings(model=API_MODEL)) as server:
        config = write_api_config(
            tmp_path / "api.yaml",
            server.base_url,
            **settings,
            price_input_per_m=PRICE_IN,
            price_output_per_m=PRICE_OUT,
            max_budget_usd=budget,
        )
        runs = [run_rd(config, rd_home, GENERATION, ["gsm8k"]) for _ in range(3)]
        shown = subprocess.run(
            [sys.executable, "-m", "rd_pipeline.cli", "budget", "show", "--config", str(config)],
            env=rd_env(rd_home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        stats = server.stats()
    usage = Store(rd_home / "rd.duckdb").read("generation_usage", "gsm8k")
    spent = sum(row["cost_usd"] for row in usage if row["asset"] == "teacher_responses")
    assert 0 < spent <= budget, [run.stderr[-2000:] for run in runs]
    assert stats["answered_total"] == stats["unique_answered"]
    assert "would be exceeded" in runs[-1].stdout + runs[-1].stderr
    assert shown.returncode == 0 and f"${spent:.4f}" in shown.stdout and f"${budget:.4f}" in shown.stdout
    print(f"three rd runs under ${budget}: spent ${spent:.4f} in {stats['answered_total']} requests")
