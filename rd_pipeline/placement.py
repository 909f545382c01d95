"""GPU placement: a heavy step claims specific devices from a pool sized to the machine.

Each device has a lock file under ``RD_HOME/locks/gpus/``; a step holds an exclusive ``flock`` on the files of
the devices it runs on, so steps in different processes (parallel Dagster runs, the multiprocess executor, two
``rd`` commands) get disjoint devices. The kernel drops the locks when their process dies, so a crashed step
never keeps a GPU. While a claim is held, ``CUDA_VISIBLE_DEVICES`` names its devices; child processes (vLLM,
``accelerate launch``) inherit it.

The pool is ``$RD_GPU_COUNT`` devices when that is set (a fake count, for tests or to leave GPUs out), else the
devices in ``$CUDA_VISIBLE_DEVICES`` when set, else every GPU ``nvidia-smi`` (or the NVIDIA driver) reports. A
machine with no GPU has an empty pool: claims then hold nothing and steps run on the CPU.

CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process. A process that claims twice (steps run one after another
in one process) is given the devices of its first claim again when they are free, so its in-process CUDA context
still points at the devices it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rd_pipeline.config import LaunchConfig, ModelConfig, PipelineConfig

log = logging.getLogger(__name__)

GPU_COUNT_ENV = "RD_GPU_COUNT"
WAIT_ENV = "RD_GPU_WAIT_S"
DEFAULT_WAIT_S = 6 * 3600.0
LOCK_SUBDIR = Path("locks") / "gpus"

_first_claim: tuple[str, ...] = ()  # the devices this process claimed first (see the module docstring)


class PlacementError(RuntimeError):
    """A step needs more GPUs than the machine has, or none became free in time."""


@functools.cache
def _detected_gpus() -> int:
    """NVIDIA GPUs on this machine, without importing torch: ``nvidia-smi -L``, else the driver's /proc entries.

    When neither is there, torch's count if torch is already imported (other CUDA platforms), else none.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            listing = None
        if listing is not None and listing.returncode == 0:
            return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return sum(1 for _ in driver.iterdir())
    torch = sys.modules.get("torch")
    return torch.cuda.device_count() if torch is not None else 0


def machine_devices() -> list[str]:
    """The device ids steps are placed on (see the module docstring for where they come from)."""
    fake = os.environ.get(GPU_COUNT_ENV)
    if fake is not None and fake.strip() != "":
        try:
            count = int(fake)
        except ValueError:
            raise PlacementError(f"${GPU_COUNT_ENV} must be a whole number of GPUs, got {fake!r}") from None
        if count < 0:
            raise PlacementError(f"${GPU_COUNT_ENV} must not be negative, got {count}")
        return [str(i) for i in range(count)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(_detected_gpus())]


# ------------------------------------------------------------------------------------ what each step needs


def local_model_gpus(model: ModelConfig) -> int:
    """GPUs a model needs to generate on this machine: none behind an API, a vLLM engine's tensor x data parallel
    size, else one."""
    if model.backend == "openai":
        return 0
    if model.backend == "vllm":
        return model.vllm.tensor_parallel_size * model.vllm.data_parallel_size
    return 1


def training_gpus(launch: LaunchConfig) -> int:
    """GPUs a training step uses on this machine: its processes per machine."""
    return max(1, launch.num_processes // launch.num_machines)


def step_gpus(asset: str, config: PipelineConfig) -> int:
    """How many GPUs the step materializing ``asset`` needs (0 for light steps and API-only generation)."""
    needs: dict[str, Callable[[], int]] = {
        "teacher_responses": lambda: local_model_gpus(config.teacher),
        "student_responses": lambda: local_model_gpus(config.student),
        "sft_student": lambda: training_gpus(config.sft.launch),
        "reward_model": lambda: training_gpus(config.reward_model.launch),
        "rl_student": lambda: training_gpus(config.rl.launch),
        "eval_scores": lambda: max(
            local_model_gpus(config.student),
            local_model_gpus(config.teacher),
            local_model_gpus(config.eval_judge_model),
        ),
        "judge_audit": lambda: max(
            local_model_gpus(config.judge_model), local_model_gpus(config.eval_judge_model)
        ),
    }
    need = needs.get(asset)
    return need() if need is not None else 0


# ------------------------------------------------------------------------------------------- claiming


@dataclass
class _Held:
    device: str
    fd: int


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{device}.lock"


def _try_lock(lock_dir: Path, device: str, owner: str) -> _Held | None:
    fd = os.open(_lock_path(lock_dir, device), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner.encode(), 0)
    return _Held(device, fd)


def _release(held: Sequence[_Held]) -> None:
    for item in held:
        fcntl.flock(item.fd, fcntl.LOCK_UN)
        os.close(item.fd)


def holders(lock_dir: Path, devices: Sequence[str]) -> dict[str, str]:
    """Who holds each locked device (the owner line its holder wrote), for messages."""
    found = {}
    for device in devices:
        path = _lock_path(lock_dir, device)
        held = _try_lock(lock_dir, device, "") if path.exists() else None
        if held is None and path.exists():
            found[device] = path.read_text().strip() or "unknown"
        elif held is not None:
            _release([held])
    return found


def _preference(pool: Sequence[str]) -> list[str]:
    """The pool in the order devices are tried: this process's first claim first."""
    first = [d for d in _first_claim if d in pool]
    return first + [d for d in pool if d not in first]


def try_claim(lock_dir: Path, pool: Sequence[str], count: int, owner: str) -> list[_Held] | None:
    """Lock ``count`` free devices of ``pool`` at once, or none (never a partial claim that could deadlock)."""
    held: list[_Held] = []
    for device in _preference(pool):
        item = _try_lock(lock_dir, device, owner)
        if item is not None:
            held.append(item)
            if len(held) == count:
                return held
    _release(held)
    return None


@contextlib.contextmanager
def claim_gpus(
    count: int,
    rd_home: Path,
    label: str = "step",
    wait_s: float | None = None,
    poll_s: float = 0.2,
) -> Iterator[tuple[str, ...]]:
    """Hold ``count`` devices of this machine's pool for the ``with`` block; yields their ids.

    Yields ``()`` when the step needs no GPU or the machine has none (it then runs on the CPU). Waits up to
    ``wait_s`` (default ``$RD_GPU_WAIT_S``, else 6 hours) for devices other processes hold.
    """
    global _first_claim
    pool = machine_devices()
    if count <= 0 or not pool:
        yield ()
        return
    if count > len(pool):
        raise PlacementError(
            f"{label} needs {count} GPU(s) but this machine has {len(pool)} ({', '.join(pool)}); lower its "
            "process or parallel count, or run it on a bigger machine"
        )
    lock_dir = Path(rd_home) / LOCK_SUBDIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    owner = f"{label} pid {os.getpid()} on {socket.gethostname()}"
    wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)) if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    held = try_claim(lock_dir, pool, count, owner)
    if held is None:
        log.info("%s waits for %d free GPU(s); held: %s", label, count, holders(lock_dir, pool))
    while held is None:
        if time.monotonic() >= deadline:
            raise PlacementError(
                f"{label}: {count} of the {len(pool)} GPUs did not become free within {wait_s:g}s; "
                f"held by: {holders(lock_dir, pool)}"
            )
        time.sleep(poll_s)
        held = try_claim(lock_dir, pool, count, owner)
    devices = tuple(item.device for item in held)
    _first_claim = _first_claim or devices
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        yield devices
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        _release(held)


def pool_slots() -> int:
    """How many heavy steps may run at once on this machine: one per GPU, at least one."""
    return max(1, len(machine_devices()))
