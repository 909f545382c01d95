"""A local stand-in for the Hugging Face hub: the endpoints ``huggingface_hub`` 2.x calls for ``create_repo`` and
``upload_folder`` of small files (repository creation, README metadata validation, preupload, commit), answering
every file as a regular (inline, base64) upload so no LFS or Xet storage is involved.

It records what arrives: created repositories with their payload, committed files with their bytes, and the
authorization header of every request. ``refuse_with`` makes every request fail with that HTTP status.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<revision>[^/?]+)")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<revision>[^/?]+)")


@dataclass
class HubState:
    """What the stand-in hub received."""

    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    refuse_with: int | None = None


class HubServer:
    """The stand-in hub on 127.0.0.1 at a free port, serving from a thread until ``close``."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        self.state.requests.append(("POST", path))
        self.state.authorizations.append(self.headers.get("Authorization", ""))
        if self.state.refuse_with is not None:
            self._reply(self.state.refuse_with, {"error": f"refused with {self.state.refuse_with}"})
        elif path == "/api/repos/create":
            self._create_repo(json.loads(body))
        elif path == "/api/validate-yaml":
            self._reply(200, {"errors": [], "warnings": []})
        elif match := _PREUPLOAD.match(path):
            self._preupload(match["repo"], json.loads(body))
        elif match := _COMMIT.match(path):
            self._commit(match["repo"], match["revision"], body)
        else:
            self._reply(404, {"error": f"no such endpoint {path}"})

    def _create_repo(self, payload: dict[str, Any]) -> None:
        repo_id = "/".join(part for part in (payload.get("organization"), payload["name"]) if part)
        self.state.repos[repo_id] = payload
        self._reply(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id, "id": repo_id})

    def _preupload(self, repo_id: str, payload: dict[str, Any]) -> None:
        if repo_id not in self.state.repos:
            self._reply(404, {"error": f"Repository {repo_id} not found"})
            return
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in payload["files"]
        ]
        self._reply(200, {"files": files, "commitOid": "0" * 40})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        stored = self.state.files.setdefault(repo_id, {})
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                assert value["encoding"] == "base64", value
                stored[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] != "header":
                self._reply(400, {"error": f"unexpected commit operation {line['key']}"})
                return
        oid = f"{len(self.state.commits) + 1:040x}"
        self.state.commits.append({"repo_id": repo_id, "revision": revision, "summary": header["summary"]})
        url = f"http://{self.headers['Host']}/{repo_id}/commit/{oid}"
        self._reply(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})
