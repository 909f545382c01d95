"""A training group dies with the process that started it: the launcher through the guard, the workers with
their launcher (Linux's parent-death signal), so no orphan keeps training a version that a re-run trains too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rd_pipeline.config import LaunchConfig, SftConfig
from rd_pipeline.training.guard import GUARD_MODULE, guarded, set_parent_death_signal
from rd_pipeline.training.launch import TrainingJob, launch_command, prepare_job
from rd_pipeline.training.resume import saved_state, trainer_state_dir

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")


def _processes_mentioning(text: str) -> list[int]:
    """The pids of processes whose command line contains ``text`` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if any(text.encode() in argument for argument in arguments):
            found.append(int(cmdline.parent.name))
    return found


def _wait_until_gone(text: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _exec_into(pid: int, text: str, timeout: float) -> bool:
    """Wait until process ``pid``, started as the guard, has exec'd into a command line containing ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if text.encode() in cmdline and GUARD_MODULE.encode() not in cmdline:
                return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@linux_only
def test_the_launch_command_runs_through_the_guard(tmp_path: Path) -> None:
    job = prepare_job("sft", tmp_path / "job", tmp_path / "out", LaunchConfig(), {}, {})
    command = launch_command(job)
    assert command[:3] == [sys.executable, "-m", GUARD_MODULE]
    assert command[3:5] == ["--parent", str(os.getpid())]
    rest = command[command.index("--") + 1 :]
    assert rest[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert rest[-3:] == ["-m", "rd_pipeline.training.worker", str(job.job_dir)]


def test_the_guard_runs_the_command_with_its_output_and_exit_code() -> None:
    command = guarded([sys.executable, "-c", "import sys; print('trained'); sys.exit(3)"])
    process = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert process.returncode == 3 and process.stdout == "trained\n"


def test_the_guard_execs_in_place(tmp_path: Path) -> None:
    """The guard replaces itself with the command (same pid), so a starter's signals and wait reach the
    launcher itself."""
    with subprocess.Popen(
        guarded([sys.executable, "-c", "import os; print(os.getpid())"]), stdout=subprocess.PIPE, text=True
    ) as process:
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and int(output) == process.pid


IGNORE_AND_BLOCK_SIGTERM = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})"
)


@linux_only
@pytest.mark.parametrize(
    "starter_prelude", ["pass", IGNORE_AND_BLOCK_SIGTERM], ids=["plain", "sigterm_ignored"]
)
def test_a_guarded_command_gets_sigterm_when_its_starter_dies(tmp_path: Path, starter_prelude: str) -> None:
    """A starter starts a guarded sleeper, reports its pid and is SIGKILLed; the sleeper ends by SIGTERM, also
    when the starter ignored and blocked SIGTERM (both are inherited across fork and execve)."""
    marker = str(tmp_path / "sleeper")
    starter_code = textwrap.dedent(
        f"""
        {starter_prelude}
        import subprocess, sys, time
        from rd_pipeline.training.guard import guarded
        child = subprocess.Popen(guarded([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}]))
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    starter = subprocess.Popen([sys.executable, "-c", starter_code], stdout=subprocess.PIPE, text=True)
    try:
        assert starter.stdout is not None
        child = int(starter.stdout.readline())
        assert _exec_into(child, "time.sleep(120)", timeout=120), "the guard never ran the sleeper"
        assert _process_alive(child)
        starter.kill()
        starter.wait()
        left = _wait_until_gone(marker, timeout=60)
        assert left == [], f"the guarded command outlived its starter: {left}"
    finally:
        starter.kill()
        _kill_all(_processes_mentioning(marker))


@linux_only
def test_a_guarded_command_whose_starter_already_died_does_not_run(tmp_path: Path) -> None:
    """Told a starter pid that is not its parent (the starter died before the signal was set), the guard ends by
    SIGTERM instead of running the command."""
    flag = tmp_path / "ran"
    command = [sys.executable, "-m", GUARD_MODULE, "--parent", "999999999", "--", "touch", str(flag)]
    process = subprocess.run(command, timeout=60)
    assert process.returncode == -signal.SIGTERM and not flag.exists()


def test_the_guard_is_left_out_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert set_parent_death_signal() is False
    assert guarded(["accelerate", "launch"], parent=os.getpid()) == ["accelerate", "launch"]


def _examples(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}],
        }
        for i in range(n)
    ]


def _long_sft_job(base: str, tmp: Path, out_dir: Path) -> TrainingJob:
    """A 2-process SFT job that trains far longer than any test waits, saving its state every 2 steps."""
    launch = LaunchConfig(num_processes=2)
    cfg = SftConfig(
        max_steps=100_000, batch_size=2, learning_rate=1e-3, max_length=128, save_every_steps=2, launch=launch
    )
    settings = {"base": base, "revision": None, "seed": 0, "config": cfg.model_dump(mode="json")}
    return prepare_job("sft", tmp / "job_v", out_dir, launch, settings, {"examples": _examples(64)})


def _wait_for_saved_state(out_dir: Path, starter: subprocess.Popen) -> None:
    """Wait until the job's workers are training (they saved trainer state), its starter still running."""
    deadline = time.monotonic() + 240
    while saved_state(trainer_state_dir(out_dir)) is None and starter.poll() is None:
        assert time.monotonic() < deadline, "the job saved no trainer state in time"
        time.sleep(0.05)
    assert starter.poll() is None, "the starter ended before it could be killed"


# Scripts that start a 2-process SFT job as ``rd materialize`` does: through Dagster Pipes (the launcher's output
# goes straight to the step's own), or as a plain subprocess whose output the starter reads.
PIPES_STARTER = """
import sys
from pathlib import Path
import dagster as dg
from rd_pipeline.config import LaunchConfig
from rd_pipeline.defs.assets.trained import pipes_launcher
from rd_pipeline.training.launch import TrainingJob

@dg.asset
def student(context: dg.AssetExecutionContext) -> None:
    pipes_launcher(context)(TrainingJob("sft", Path(sys.argv[1]), Path(sys.argv[2]), LaunchConfig(num_processes=2)))

dg.materialize([student])
"""
PLAIN_STARTER = """
import sys
from pathlib import Path
from rd_pipeline.config import LaunchConfig
from rd_pipeline.training.launch import TrainingJob, run_training_job

run_training_job(TrainingJob("sft", Path(sys.argv[1]), Path(sys.argv[2]), LaunchConfig(num_processes=2)))
"""


@linux_only
@pytest.mark.parametrize(
    "starter_script",
    [
        pytest.param(PIPES_STARTER, id="pipes"),
        # The plain starter's death also breaks the pipe the group writes its output to, which ends it at its next
        # write even without the parent-death signal; a slow test only.
        pytest.param(PLAIN_STARTER, id="run_training_job", marks=pytest.mark.slow),
    ],
)
def test_a_two_process_training_group_dies_with_the_process_that_started_it(
    starter_script: str, tiny_base: str, tmp_path: Path
) -> None:
    """A script starts a 2-process SFT job and is SIGKILLed while the workers train (as ``rd materialize`` or a
    Dagster step process would be); no launcher or worker of the job is left to train on."""
    out_dir = tmp_path / "v.partial"
    job = _long_sft_job(tiny_base, tmp_path, out_dir)
    starter = subprocess.Popen(
        [sys.executable, "-c", starter_script, str(job.job_dir), str(out_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    job_text = str(job.job_dir)
    try:
        _wait_for_saved_state(out_dir, starter)
        group = set(_processes_mentioning(job_text)) - {starter.pid}
        assert len(group) >= 3, f"expected the launcher and two workers, found {sorted(group)}"
        starter.kill()
        starter.wait()
        left = _wait_until_gone(job_text, timeout=15)
        assert left == [], f"processes of the job outlived the process that started it: {left}"
    finally:
        starter.kill()
        _kill_all(_processes_mentioning(job_text))


@linux_only
def test_the_workers_die_with_their_launcher(tiny_base: str, tmp_path: Path) -> None:
    """The ``accelerate launch`` launcher of a 2-process SFT job is SIGKILLed while the workers train (torch starts
    them in sessions of their own); the workers end too instead of training on."""
    out_dir = tmp_path / "v.partial"
    job = _long_sft_job(tiny_base, tmp_path, out_dir)
    launcher = subprocess.Popen(launch_command(job), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job_text = str(job.job_dir)
    try:
        _wait_for_saved_state(out_dir, launcher)
        assert len(_processes_mentioning(job_text)) >= 3, "expected the launcher and two workers"
        launcher.kill()
        launcher.wait()
        left = _wait_until_gone(job_text, timeout=15)
        assert left == [], f"workers outlived their launcher: {left}"
    finally:
        launcher.kill()
        _kill_all(_processes_mentioning(job_text))
