"""Tie a training process's life to the process that started it.

``python -m rd_pipeline.training.guard [--parent PID] COMMAND...`` asks Linux to send SIGTERM to this process
when its parent dies (``prctl(PR_SET_PDEATHSIG)``, kept across ``execve``) and then becomes ``COMMAND``, so the
``accelerate launch`` launcher ends when the process that started it (``rd materialize``, a Dagster step) is
killed, even by SIGKILL, instead of training on as an orphan. Each worker of the group asks the same of its
launcher (``die_with_parent`` at the start of ``rd_pipeline.training.worker``): torch's launcher starts its workers
in sessions of their own, so they would otherwise outlive it too. Without this a re-run would train the same
version alongside the orphans, racing over its ``<version>.trainer`` state and ``<version>.partial`` checkpoint.

Linux sends the signal when the parent *thread* that started the child exits, not the parent process. Both
starters wait on the launcher in the thread that started it (``run_training_job`` reads its output in that
thread; ``PipesSubprocessClient.run`` calls ``Popen`` and ``wait`` in the same thread), and torch's launcher
starts and watches its workers from its main thread. Elsewhere than on Linux all of this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
GUARD_MODULE = "rd_pipeline.training.guard"


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``signum`` to this process when its parent thread exits; False where that is not
    available (not Linux, no libc, or prctl refused)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int | None = None, signum: int = signal.SIGTERM) -> None:
    """Set the parent-death signal and, if the parent already died before it was set, end now the way the signal
    would have ended this process. ``parent`` is the pid the parent should have (the guard is told its starter's);
    without it the parent at the time of the call is taken, so a parent that died before the call goes unnoticed.
    A parent pid of 1 is not taken for death: the starter may be a container's first process."""
    expected = os.getppid() if parent is None else parent
    if not set_parent_death_signal(signum):
        return
    # An ignored or blocked signal is inherited from the starter and kept across execve: it would never end us.
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    # Reparented (to init or a subreaper): the parent died before the signal was set.
    if os.getppid() != expected:
        print(f"{sys.argv[0]}: parent process {expected} is gone; ending", file=sys.stderr, flush=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # only reached if the signal is blocked


def guarded(command: list[str], parent: int | None = None) -> list[str]:
    """``command`` run through this guard; ``parent`` is the starter's pid (checked once the signal is set).
    ``command`` itself off Linux, where the guard could do nothing (and ``execvp`` may not replace the process)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    prefix = [sys.executable, "-m", GUARD_MODULE]
    if parent is not None:
        prefix += ["--parent", str(parent)]
    return [*prefix, "--", *command]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parent = None
    if argv[:1] == ["--parent"] and len(argv) >= 2:
        parent, argv = int(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m rd_pipeline.training.guard [--parent PID] [--] COMMAND...", file=sys.stderr)
        return 2
    die_with_parent(parent)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
