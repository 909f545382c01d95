"""GPU placement on a CPU machine with a faked device count: real processes, real file locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rd_pipeline.config import parse_config
from rd_pipeline.placement import (
    GPU_COUNT_ENV,
    PlacementError,
    claim_gpus,
    machine_devices,
    pool_slots,
    step_gpus,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# A process that claims GPUs, reports what it got and when, holds them for a while, then releases them.
CLAIMER = textwrap.dedent(
    """
    import json, os, sys, time
    from rd_pipeline.placement import claim_gpus
    rd_home, count, hold_s, label = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    with claim_gpus(count, rd_home, label=label, wait_s=60, poll_s=0.05) as devices:
        start = time.time()
        print(json.dumps({"devices": list(devices), "visible": os.environ["CUDA_VISIBLE_DEVICES"],
                          "start": start}), flush=True)
        time.sleep(hold_s)
        end = time.time()
    print(json.dumps({"end": end}), flush=True)
    """
)


def start_claimer(rd_home: Path, count: int, hold_s: float, label: str, gpus: int = 4) -> subprocess.Popen:
    env = dict(os.environ, **{GPU_COUNT_ENV: str(gpus)})
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(rd_home), str(count), str(hold_s), label],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def claimer_report(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err[-2000:]
    first, last = (json.loads(line) for line in out.splitlines())
    return {**first, **last}


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPU_COUNT_ENV, "4")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_pool_comes_from_the_fake_count_or_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPU_COUNT_ENV, "3")
    assert machine_devices() == ["0", "1", "2"] and pool_slots() == 3
    monkeypatch.setenv(GPU_COUNT_ENV, "0")
    assert machine_devices() == [] and pool_slots() == 1
    monkeypatch.delenv(GPU_COUNT_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert machine_devices() == ["2", "5"]
    monkeypatch.setenv(GPU_COUNT_ENV, "two")
    with pytest.raises(PlacementError, match=r"\$RD_GPU_COUNT must be a whole number of GPUs, got 'two'"):
        machine_devices()


def test_steps_declare_their_gpus() -> None:
    config = parse_config(
        {
            "teacher": {"ref": "t", "backend": "openai", "api": {"base_url": "http://x/v1"}},
            "student": {"ref": "tiny-random"},
            "sft": {"launch": {"num_processes": 2}},
            "rl": {
                "launch": {
                    "num_processes": 4,
                    "num_machines": 2,
                    "main_process_ip": "h",
                    "main_process_port": 1,
                }
            },
        }
    )
    needs = {
        asset: step_gpus(asset, config)
        for asset in ("benchmark_prompts", "teacher_responses", "student_responses", "sft_student")
        + ("reward_model", "rl_student", "eval_scores", "report")
    }
    assert needs == {
        "benchmark_prompts": 0,
        "teacher_responses": 0,  # the teacher answers over an API: no local GPU
        "student_responses": 1,
        "sft_student": 2,
        "reward_model": 1,
        "rl_student": 2,  # 4 processes over 2 machines: 2 on this one
        "eval_scores": 1,
        "report": 0,
    }


def test_claim_sets_and_restores_visible_devices(tmp_path: Path, four_gpus: None) -> None:
    with claim_gpus(2, tmp_path, label="sft_student") as devices:
        assert devices == ("0", "1") and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert (tmp_path / "locks/gpus/gpu-0.lock").read_text().startswith("sft_student pid ")
        with claim_gpus(2, tmp_path, label="other", wait_s=0) as others:  # the remaining two
            assert others == ("2", "3")
        with pytest.raises(PlacementError, match=r"other: 3 of the 4 GPUs did not become free within 0s"):
            with claim_gpus(3, tmp_path, label="other", wait_s=0):
                pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(PlacementError, match="rl_student needs 5 GPU.s. but this machine has 4"):
        with claim_gpus(5, tmp_path, label="rl_student"):
            pass


def test_no_gpu_or_no_need_claims_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPU_COUNT_ENV, "0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with claim_gpus(2, tmp_path) as devices:
        assert devices == () and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv(GPU_COUNT_ENV, "2")
    with claim_gpus(0, tmp_path) as devices:
        assert devices == () and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "locks").exists()


def test_two_processes_get_disjoint_devices_and_a_third_waits(tmp_path: Path) -> None:
    generation = start_claimer(tmp_path, 2, 2.0, "teacher_responses")
    training = start_claimer(tmp_path, 2, 2.0, "sft_student")
    time.sleep(0.5)
    waiting = start_claimer(tmp_path, 1, 0.1, "eval_scores")
    first, second, third = (claimer_report(p) for p in (generation, training, waiting))
    assert set(first["devices"]).isdisjoint(second["devices"])
    assert sorted(first["devices"] + second["devices"]) == ["0", "1", "2", "3"]
    assert first["visible"] == ",".join(first["devices"]) and second["visible"] == ",".join(second["devices"])
    # Both ran at the same time, side by side.
    assert max(first["start"], second["start"]) < min(first["end"], second["end"])
    # The third got a device only once one of the others had let go of it.
    releases = {d: r["end"] for r in (first, second) for d in r["devices"]}
    assert third["start"] >= releases[third["devices"][0]] - 0.01


def test_a_killed_holder_frees_its_devices(tmp_path: Path) -> None:
    holder = start_claimer(tmp_path, 4, 600.0, "crashes", gpus=4)
    line = holder.stdout.readline()
    assert json.loads(line)["devices"] == ["0", "1", "2", "3"], holder.stderr.read()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    started = time.monotonic()
    report = claimer_report(start_claimer(tmp_path, 4, 0.0, "after_crash"))
    assert report["devices"] == ["0", "1", "2", "3"]
    assert time.monotonic() - started < 30


def test_heavy_step_runs_on_the_gpu_it_claimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Dagster: teacher_responses gets the free device, benchmark_prompts none; the gpu pool has 2 slots."""
    import dagster as dg
    import yaml

    from rd_pipeline.config import load_config
    from rd_pipeline.defs.resources import PipelineResource
    from rd_pipeline.defs.run import materialize_graph

    rd_home = tmp_path / "rd"
    config_file = tmp_path / "one.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "teacher": {"ref": "tiny-random"},
                "student": {"ref": "tiny-random"},
                "benchmarks": [{"name": "gsm8k", "source": "builtin", "train_size": 2, "eval_size": 1}],
                "sampling": {"n": 1, "temperatures": [1.0], "max_new_tokens": 4},
                "paths": {"rd_home": str(rd_home)},
            }
        )
    )
    monkeypatch.setenv(GPU_COUNT_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("RD_HOME", str(rd_home))
    monkeypatch.setenv("DAGSTER_HOME", str(rd_home / "dagster"))
    config = load_config(config_file)
    with claim_gpus(1, rd_home, label="another step") as taken:
        results = materialize_graph(
            config,
            PipelineResource(config_file=str(config_file)),
            selection=["benchmark_prompts", "teacher_responses"],
            partitions=["gsm8k"],
            log_level="WARNING",
        )
    assert all(result.success for result in results)
    instance = dg.DagsterInstance.get()
    placements = {}
    for asset in ("benchmark_prompts", "teacher_responses"):
        record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
        placements[asset] = record.asset_materialization.metadata.get("placement")
    free = {"0": "1", "1": "0"}[taken[0]]
    assert placements["benchmark_prompts"] is None
    assert placements["teacher_responses"].value == f"GPU {free}"
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2


def test_vllm_engines_need_tensor_times_data_parallel_gpus() -> None:
    config = parse_config(
        {
            "teacher": {
                "ref": "t",
                "backend": "vllm",
                "vllm": {"tensor_parallel_size": 2, "data_parallel_size": 3},
            },
            "student": {"ref": "tiny-random", "backend": "vllm"},
        }
    )
    assert step_gpus("teacher_responses", config) == 6
    assert step_gpus("student_responses", config) == 1
    assert step_gpus("eval_scores", config) == 6  # the teacher is evaluated too


def test_sizing_the_pool_imports_no_torch(tmp_path: Path) -> None:
    """The orchestrating process learns the GPU count without importing torch (a no-op run stays light)."""
    code = "import sys; from rd_pipeline.placement import pool_slots; pool_slots(); print('torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in (GPU_COUNT_ENV, "CUDA_VISIBLE_DEVICES")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
