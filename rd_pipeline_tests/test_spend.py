"""Money and compute are spent once: the API budget counts every run, and concurrent runs never generate the same
samples twice. Steps run as plain calls and in real processes, against a real local OpenAI-compatible server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rd_pipeline.cli import main as rd_main
from rd_pipeline.config import load_config
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.teacher import make_teacher_responses
from rd_pipeline.store import Store
from rd_pipeline_tests.support.api_pipeline_config import API_MODEL, KEY_ENV, write_api_config
from rd_pipeline_tests.support.fault_server import FaultServer, FaultSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
PRICES = {"price_input_per_m": 1000.0, "price_output_per_m": 2000.0}  # USD per million tokens
SETTINGS = {"train_size": 16, "n": 4, "temperatures": [0.7, 1.0], "max_new_tokens": 20}


@pytest.fixture
def rd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "rd"
    monkeypatch.setenv("RD_HOME", str(home))
    monkeypatch.setenv(KEY_ENV, "sk-test")
    for name in ("RD_CONFIG", "RD_PRESET"):
        monkeypatch.delenv(name, raising=False)
    return home


def run_teacher(config_path: Path, run_id: str, server: FaultServer) -> int:
    """teacher_responses[gsm8k] as a plain call; returns how many chat requests the server answered meanwhile.

    A run stopped by the budget may be refused its commit (its table incomplete): its samples stay journaled.
    """
    before = server.stats()["answered_total"]
    ctx = StepContext(load_config(config_path), run_id=run_id)
    try:
        make_teacher_responses(ctx, "gsm8k")
    except RuntimeError as error:
        assert "budget" in str(error), error
    return server.stats()["answered_total"] - before


def run_costs(rd_home: Path) -> list[float]:
    """The cost each teacher run reported, as the step recorded it in generation_usage."""
    rows = Store(rd_home / "rd.duckdb").read("generation_usage", "gsm8k", order_by="recorded_at")
    return [row["cost_usd"] for row in rows if row["asset"] == "teacher_responses"]


def test_budget_counts_every_run_until_raised_or_reset(
    tmp_path: Path, rd_home: Path, capsys: pytest.CaptureFixture
) -> None:
    with FaultServer(FaultSettings(model=API_MODEL)) as server:
        capped = write_api_config(
            tmp_path / "capped.yaml", server.base_url, **SETTINGS, **PRICES, max_budget_usd=1.0
        )
        make_benchmark_prompts(StepContext(load_config(capped)), "gsm8k")
        sent = [run_teacher(capped, f"run{i}", server) for i in range(3)]
        costs = run_costs(rd_home)

        # Three runs under a $1 cap spend $1 at most together (a rerun only uses what is left of it); the last
        # finds too little left for one more request and sends nothing.
        assert sent[0] > 0 and sent[-1] == 0
        assert costs[0] > 0 and sum(costs) <= 1.0
        spend = Store(rd_home / "rd.duckdb").api_spend()
        assert [(row["endpoint"], row["model"]) for row in spend] == [(server.base_url, API_MODEL)]
        assert spend[0]["spent_usd"] == pytest.approx(sum(costs)) and spend[0]["requests"] == sum(sent)

        assert rd_main(["budget", "show", "--config", str(capped)]) == 0
        shown = capsys.readouterr().out
        assert server.base_url in shown and API_MODEL in shown and f"${sum(costs):.4f}" in shown

        # Raising the cap in the config is one deliberate way to spend more...
        raised = write_api_config(
            tmp_path / "raised.yaml", server.base_url, **SETTINGS, **PRICES, max_budget_usd=2.0
        )
        assert run_teacher(raised, "raised", server) > 0
        assert sum(run_costs(rd_home)) <= 2.0

        # ...resetting the counted spend is the other: the same cap then allows as much again.
        assert rd_main(["budget", "reset", "--config", str(capped)]) == 0
        assert "budget reset for" in capsys.readouterr().out
        assert Store(rd_home / "rd.duckdb").api_spent_usd(server.base_url, API_MODEL) == 0.0
        assert run_teacher(capped, "after-reset", server) > 0
        assert 0 < run_costs(rd_home)[-1] <= 1.0
        stats = server.stats()
    assert stats["answered_total"] == stats["unique_answered"]  # nothing bought twice
    print(f"budget $1, then $2, then reset: run costs {[round(c, 4) for c in run_costs(rd_home)]}")


STEP_PROCESS = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    from rd_pipeline.config import load_config
    from rd_pipeline.steps.context import StepContext
    from rd_pipeline.steps.teacher import make_teacher_responses

    config_path, run_id, ready, go = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO)
    config = load_config(config_path)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    metadata = make_teacher_responses(StepContext(config, run_id=run_id), "gsm8k").metadata
    print("RESULT", metadata["samples_generated"], metadata["samples_from_journal"], metadata["rows"])
    """
)


def test_two_processes_never_generate_the_same_samples(tmp_path: Path, rd_home: Path) -> None:
    """Two real processes run teacher_responses[gsm8k] at the same moment: every request is answered once."""
    settings = {"train_size": 4, "n": 2, "temperatures": [0.7, 1.0], "max_new_tokens": 16}
    with FaultServer(FaultSettings(model=API_MODEL, latency_s=0.4)) as server:
        config = write_api_config(tmp_path / "api.yaml", server.base_url, **settings, max_concurrency=2)
        make_benchmark_prompts(StepContext(load_config(config)), "gsm8k")
        go = tmp_path / "go"
        children = []
        for name in ("a", "b"):
            ready = tmp_path / f"ready-{name}"
            command = [sys.executable, "-c", STEP_PROCESS, str(config), name, str(ready), str(go)]
            child = subprocess.Popen(
                command, env=dict(os.environ), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            children.append((ready, child))
        deadline = time.monotonic() + 120
        while not all(ready.exists() for ready, _ in children):
            assert time.monotonic() < deadline and all(c.poll() is None for _, c in children)
            time.sleep(0.05)
        go.touch()
        outputs = [child.communicate(timeout=120) for _, child in children]
        stats = server.stats()
    results = []
    for (_, child), (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()[-3000:]
        line = next(line for line in out.decode().splitlines() if line.startswith("RESULT"))
        results.append(tuple(int(value) for value in line.split()[1:]))
    total = 4 * 2 * 2
    assert (
        stats["answered_total"] == stats["unique_answered"] == 4 * 2
    )  # one request per prompt and temperature
    assert sorted(results) == [(0, total, total), (total, 0, total)]  # one generated, the other read it back
    assert any("another run is generating these samples" in err.decode() for _, err in outputs)


def test_every_answered_request_is_in_the_spend_ledger_scoring_included(tmp_path: Path) -> None:
    """A judge's generation and its logprob scoring requests both leave a spend entry in the journal."""
    from rd_pipeline.config import ApiConfig, ModelConfig
    from rd_pipeline.generation import make_generator
    from rd_pipeline.generation.journal import read_spend
    from rd_pipeline.labeling.judge import judge_pointwise

    def lean_to_eight(body: dict) -> list[tuple[str, dict[str, float]]] | None:
        last = body["messages"][-1]
        if last["role"] != "assistant" or not last["content"].endswith("[["):
            return None
        return [("8", {"8": -0.1, "6": -2.3}), ("]]", {"]]": 0.0})]

    with FaultServer(FaultSettings(model=API_MODEL, logprob_script=lean_to_eight)) as server:
        api = ApiConfig(base_url=server.base_url, model=API_MODEL, api_key_env=None, **PRICES)
        judge = make_generator(ModelConfig(ref="judge", backend="openai", api=api), tmp_path)
        judge_pointwise(judge, [("a", "Say hi", "hi"), ("b", "Say bye", "bye")], max_new_tokens=16)
        judge.close()
        stats = server.stats()
    entries = read_spend(tmp_path / "journal")
    assert stats["answered_total"] > 0 and len(entries) == stats["answered_total"]
    assert {(e.endpoint, e.model) for e in entries} == {(server.base_url, API_MODEL)}
    assert all(e.cost_usd > 0 for e in entries)
