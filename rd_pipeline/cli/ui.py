"""`rd ui`: the Dagster UI on this config, stopped with everything it started."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from rd_pipeline.cli.options import config_env, pipeline_of


def cmd_ui(args: argparse.Namespace) -> int:
    resource, config = pipeline_of(args)
    from rd_pipeline.defs.run import dagster_home, instance_for

    instance_for(config).dispose()  # installs the instance config and sizes the gpu pool to this machine
    env = dict(config_env(resource), DAGSTER_HOME=str(dagster_home(config)), RD_HOME=str(config.rd_home()))
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "rd_pipeline.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(args.port),
    ]
    print(f"rd: Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    return run_until_signalled(command, env)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_until_signalled(command: list[str], env: dict[str, str], grace_s: float = 20.0) -> int:
    """Run `command` in a process group of its own until it exits or this process is told to stop.

    SIGINT, SIGTERM and SIGHUP are passed on to the whole group as SIGINT (what `dagster dev` shuts down its
    webserver, daemon and code servers on); whatever is still running `grace_s` later is killed, so nothing keeps
    serving the port after `rd ui` has gone. Returns the command's exit status, or 128 + the signal's number.
    """
    # Dispositions and masks are inherited: whatever started rd may have blocked or ignored these signals, and an
    # ignored SIGINT would stay ignored in the command too (Python keeps an inherited SIG_IGN).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    process = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_default_stop_signals)
    received: list[tuple[int, float]] = []  # (signal, when)

    def forward(signum: int, _frame: object) -> None:
        received.append((signum, time.monotonic()))
        _signal_group(process.pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        killed = False
        while (status := process.poll()) is None:
            time.sleep(0.2)  # a blocking wait would not return to check the grace period after a signal
            if received and not killed and time.monotonic() - received[0][1] > grace_s:
                _signal_group(process.pid, signal.SIGKILL)
                killed = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:  # the group's other members may outlive its leader
            _signal_group(process.pid, signal.SIGKILL)
    return 128 + received[0][0] if received else status


def _default_stop_signals() -> None:
    """In the child before it runs the command: the stop signals unblocked and at their default actions."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
