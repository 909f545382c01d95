"""A throwaway PostgreSQL server for tests, from the Debian ``postgresql`` package (initdb + pg_ctl).

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (through ``runuser``), in a
temporary directory it owns; otherwise as the current user. It listens on 127.0.0.1 on a free port, trusts local
connections, and is stopped and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_binary(name: str) -> str | None:
    """``name`` (initdb, pg_ctl) on PATH or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None when one can."""
    if find_binary("initdb") is None or find_binary("pg_ctl") is None:
        return "PostgreSQL is not installed (initdb/pg_ctl not found; `apt-get install -y postgresql`)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing"
    try:
        import dagster_postgres  # noqa: F401
        import psycopg2  # noqa: F401 - the driver dagster-postgres uses
    except ImportError as error:
        return f"dagster-postgres is not installed ({error}); pip install 'rd-pipeline[postgres]'"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields its URL (``postgresql://postgres@127.0.0.1:PORT/postgres``)."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="rd-postgres-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    port = _free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(
            _as_server_user([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]), **run
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"]), **run
        )
    except subprocess.CalledProcessError as error:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {error.stderr}\n{server_log}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
