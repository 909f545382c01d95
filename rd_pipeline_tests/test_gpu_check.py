"""`make gpu-check` (scripts/gpu_check.py): where no GPU is found it fails at once and says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: `make gpu-check` runs for real"
)
def test_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--rd-home", str(tmp_path / "rd")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 2
    assert "gpu-check: FAILED: no CUDA GPU found (torch.cuda.is_available() is False" in checked.stderr
    assert f"torch {torch.__version__}" in checked.stderr
    assert not (tmp_path / "rd").exists()  # nothing was started


def test_generated_config_uses_vllm_and_two_training_processes(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    from rd_pipeline.config import parse_config

    config = parse_config(gpu_check.check_config(4, True, ["gsm8k"], tmp_path), "gpu-check")
    assert config.teacher.backend == config.student.backend == "vllm"
    assert not config.teacher.vllm.fallback_to_transformers and config.teacher.vllm.enforce_eager
    for section in (config.sft, config.reward_model, config.rl):
        assert section.launch.num_processes == 2 and section.launch.mixed_precision == "bf16"
    single = parse_config(gpu_check.check_config(1, False, ["gsm8k", "mmlu_pro"], tmp_path), "gpu-check")
    assert single.sft.launch.num_processes == 1 and single.sft.launch.mixed_precision == "fp16"
    assert single.benchmark_names == ["gsm8k", "mmlu_pro"]
    with pytest.raises(gpu_check.CheckFailed, match=r"unknown benchmark\(s\) \['gsm9k'\]"):
        gpu_check.check_config(1, True, ["gsm9k"], tmp_path)


def test_report_flags_steps_that_did_not_run_on_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
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
