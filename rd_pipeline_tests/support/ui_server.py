"""Start the Dagster UI (`dagster dev`, as `rd ui` does) for one RD_HOME on a free 127.0.0.1 port, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
JSON_HEADERS = {"Content-Type": "application/json"}
LOCATION_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class UiServer:
    """A running `dagster dev` process and where it listens."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        """POST one GraphQL query to the webserver and return its `data`."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers=JSON_HEADERS)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout and stderr."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def _ready(url: str) -> bool:
    """True once the webserver answers GraphQL and the code location has loaded its definitions."""
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": LOCATION_QUERY}).encode(), headers=JSON_HEADERS
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
    return '"RepositoryLocation"' in text


def _stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop `dagster dev` and everything it spawned (webserver, daemon, code servers, run workers).

    SIGINT (Ctrl-C) lets it shut its children down; `dagster dev` does not always exit after that, so whatever
    is left of its process group is then killed.
    """
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@contextmanager
def dagster_ui(
    rd_home: Path,
    dagster_home: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 240.0,
) -> Iterator[UiServer]:
    """Run `dagster dev -m rd_pipeline.definitions` on a free 127.0.0.1 port until the block exits.

    The process gets its own process group so that the webserver, the daemon and the code server it spawns are
    all stopped together, even when the block raises.
    """
    port = free_port()
    child_env = {**os.environ, **(env or {}), "RD_HOME": str(rd_home), "DAGSTER_HOME": str(dagster_home)}
    command = [sys.executable, "-m", "dagster", "dev", "-m", "rd_pipeline.definitions"]
    command += ["-h", HOST, "-p", str(port)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = UiServer(process, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _ready(server.url):
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dagster dev not ready after {ready_timeout_s:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(1.0)
        yield server
    finally:
        _stop(process)
