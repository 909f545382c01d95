"""Run a training step as its own process group under ``accelerate launch``.

The step writes a job directory (``job.json`` with the settings, one JSON Lines file per record set, the
accelerate config); ``rd_pipeline.training.worker`` runs in every process of the group, trains, saves the
checkpoint through the trainer and, on the main process, writes ``result.json`` (and reports to Dagster through
Pipes when started by it). This module imports neither torch nor the trainers, so deciding to reuse a checkpoint
never loads the training stack.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from rd_pipeline.config import LaunchConfig
from rd_pipeline.training.guard import guarded

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
ERROR_FILE_PATTERN = "error-rank*.txt"  # a failed worker's error, one file per process rank
ACCELERATE_CONFIG_FILE = "accelerate.yaml"
WORKER_MODULE = "rd_pipeline.training.worker"
JobKind = Literal["sft", "reward_model", "rl"]
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class TrainingJob:
    """A prepared training run: its directory, where the checkpoint goes, and how to launch it."""

    kind: JobKind
    job_dir: Path
    out_dir: Path
    launch: LaunchConfig

    @property
    def accelerate_config_path(self) -> Path:
        if self.launch.accelerate_config_file:
            return Path(self.launch.accelerate_config_file).expanduser().resolve()
        return self.job_dir / ACCELERATE_CONFIG_FILE


Launcher = Callable[[TrainingJob], dict[str, Any]]


def accelerate_config(
    strategy: str,
    num_processes: int = 1,
    num_machines: int = 1,
    mixed_precision: str = "bf16",
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
) -> dict[str, Any]:
    """An ``accelerate launch`` config for ``strategy``: ddp, fsdp2 (FSDP v2) or zero2/zero3 (DeepSpeed).

    fsdp2 and zero3 save full weights (gathered on the main process), so ``trainer.save_model`` writes a plain
    checkpoint. ``mixed_precision`` "auto" is written as "no": the trainer's own bf16/fp16 setting decides.
    """
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "downcast_bf16": "no",
        "machine_rank": machine_rank,
        "main_training_function": "main",
        "mixed_precision": "no" if mixed_precision == "auto" else mixed_precision,
        "num_machines": num_machines,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if main_process_ip is not None:
        config["main_process_ip"] = main_process_ip
    if main_process_port is not None:
        config["main_process_port"] = main_process_port
    if strategy == "ddp":
        config["distributed_type"] = "MULTI_GPU" if num_processes > 1 else "NO"
    elif strategy == "fsdp2":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
        }
    elif strategy in ("zero2", "zero3"):
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "zero_stage": int(strategy[-1]),
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": strategy == "zero3",
            **({"zero3_save_16bit_model": True} if strategy == "zero3" else {}),
        }
    else:
        raise ValueError(f"unknown training strategy {strategy!r}; expected ddp, fsdp2, zero2 or zero3")
    return config


def accelerate_config_yaml(strategy: str, **settings: Any) -> str:
    """The accelerate config for ``strategy`` as a ready YAML file (what ``rd accelerate-config`` prints)."""
    header = f"# accelerate config for strategy {strategy}; use with `accelerate launch --config_file FILE`\n"
    return header + yaml.safe_dump(accelerate_config(strategy, **settings), sort_keys=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def prepare_job(
    kind: JobKind,
    job_dir: Path,
    out_dir: Path,
    launch: LaunchConfig,
    settings: dict[str, Any],
    records: dict[str, Sequence[dict]],
) -> TrainingJob:
    """Write a job directory: ``job.json`` (kind, out_dir, settings), one ``<name>.jsonl`` per record set and,
    unless ``launch.accelerate_config_file`` is given, the accelerate config for ``launch.strategy``."""
    if launch.accelerate_config_file and not Path(launch.accelerate_config_file).expanduser().is_file():
        raise FileNotFoundError(
            f"launch.accelerate_config_file {launch.accelerate_config_file} does not exist"
        )
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    for name, rows in records.items():
        _write_jsonl(job_dir / f"{name}.jsonl", rows)
    job = {"kind": kind, "out_dir": str(out_dir), "settings": settings, "records": sorted(records)}
    job["launch"] = launch.model_dump(mode="json")
    (job_dir / JOB_FILE).write_text(json.dumps(job, indent=2))
    if not launch.accelerate_config_file:
        config = accelerate_config(
            launch.strategy,
            launch.num_processes,
            launch.num_machines,
            launch.mixed_precision,
            launch.machine_rank,
            launch.main_process_ip,
            launch.main_process_port,
        )
        (job_dir / ACCELERATE_CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=True))
    return TrainingJob(kind, job_dir, Path(out_dir), launch)


def launch_command(job: TrainingJob) -> list[str]:
    """The ``accelerate launch`` command line that runs the worker on ``job`` in every process of the group,
    started through ``rd_pipeline.training.guard`` so that the launcher gets SIGTERM when the process that runs
    this command (this one) dies, even by SIGKILL, instead of training on as an orphan."""
    launch = job.launch
    port = launch.main_process_port or _free_port()
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(job.accelerate_config_path),
    ]
    command += ["--num_processes", str(launch.num_processes), "--num_machines", str(launch.num_machines)]
    command += ["--machine_rank", str(launch.machine_rank), "--main_process_port", str(port)]
    if launch.main_process_ip:
        command += ["--main_process_ip", launch.main_process_ip]
    return guarded(command + ["-m", WORKER_MODULE, str(job.job_dir)], parent=os.getpid())


def read_job(job_dir: Path) -> dict[str, Any]:
    """The job description and its record sets, as the worker reads them."""
    job = json.loads((Path(job_dir) / JOB_FILE).read_text())
    records = {}
    for name in job["records"]:
        with (Path(job_dir) / f"{name}.jsonl").open() as handle:
            records[name] = [json.loads(line) for line in handle if line.strip()]
    return {**job, "records": records}


def read_result(job: TrainingJob) -> dict[str, Any]:
    """The metrics the worker's main process wrote; a clear error when it wrote none."""
    path = job.job_dir / RESULT_FILE
    if not path.is_file():
        raise RuntimeError(f"training job {job.job_dir} finished without writing {RESULT_FILE}")
    return json.loads(path.read_text())


def record_worker_error(job_dir: Path, error: BaseException) -> None:
    """Write a failed worker's error where the launcher finds it (its output may bury the line under the
    launcher's own report)."""
    rank = os.environ.get("RANK", "0")
    message = " ".join(f"{type(error).__name__}: {error}".split())
    (Path(job_dir) / ERROR_FILE_PATTERN.replace("*", rank)).write_text(message + "\n")


def worker_error(job: TrainingJob) -> str | None:
    """The error a failed worker recorded (rank 0's first, else the lowest rank's); None when none did."""
    files = sorted(job.job_dir.glob(ERROR_FILE_PATTERN), key=lambda path: int(path.stem.rsplit("rank", 1)[1]))
    return files[0].read_text().strip() if files else None


def training_failure(
    job: TrainingJob, exit_code: int | None = None, output: Sequence[str] = (), detail: str | None = None
) -> RuntimeError:
    """The error for a failed training job: its kind, exit code and job directory, then on the same line the
    worker's own error and ``detail`` (what the launcher said), then the last lines of its output."""
    cause = "; ".join(part for part in (worker_error(job), detail) if part)
    code = f"exit code {exit_code}, " if exit_code is not None else ""
    message = f"training {job.kind} failed ({code}job {job.job_dir})"
    if cause:
        message += f": {cause}"
    if output:
        message += "; last output:\n" + "\n".join(output)
    return RuntimeError(message)


def run_training_job(job: TrainingJob, log: LogFn = print) -> dict[str, Any]:
    """Launch ``job`` as a plain subprocess (no Dagster), pass its output to ``log``, return its metrics."""
    command = launch_command(job)
    log(f"training {job.kind}: {' '.join(command)}")
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            log(line.rstrip())
    if process.returncode != 0:
        raise training_failure(job, process.returncode, tail)
    return read_result(job)
