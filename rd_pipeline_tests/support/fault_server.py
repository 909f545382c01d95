"""A real local OpenAI-compatible HTTP server that injects faults, for tests and the API benchmark.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /stats`` (JSON counters). Answers are fake
but deterministic: each choice's text is a hash of the messages, the seed and the choice index. With
``fault_rate`` > 0, that share of chat requests gets one fault, drawn evenly from: 429 with Retry-After, 500,
a hang past the client's timeout (the connection is then closed with no answer), a malformed JSON body, and
fewer choices than ``n`` (only for n > 1). A request is *answered* when it gets a 200 with a valid body (fewer
choices included); answers are counted per request key (a hash of the request body), so tests can check that
nothing was asked twice.

Run it alone: ``python -m rd_pipeline_tests.support.fault_server --port 0 --latency-ms 200 --fault-rate 0.3``; it
prints ``listening on http://127.0.0.1:PORT/v1`` once ready. ``server_process`` starts it that way (a server a test
can kill), ``FaultServer`` in a thread of the caller.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS = ("429", "500", "hang", "malformed", "fewer")
MODEL_CREATED = 1_700_000_000


@dataclass
class FaultSettings:
    model: str = "fake-model"
    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    hang_s: float = 5.0
    retry_after_s: int = 1
    seed: int = 0
    required_key: str | None = None  # when set, other keys get a 401 whose body echoes the key sent
    models_status: int = 200  # the status GET /v1/models answers with (e.g. 503: the listing is down)
    owned_by: str = "fault-server"  # the model's `owned_by` in GET /v1/models (change it to change the model)
    # For a chat request that asks for logprobs: the tokens to answer with, each with its top alternatives
    # (token -> logprob), from the request body; None answers as usual, without logprobs.
    logprob_script: Callable[[dict[str, Any]], list[tuple[str, dict[str, float]]] | None] | None = None


def request_key(body: dict[str, Any]) -> str:
    """The key a chat request is counted under: a hash of its whole JSON body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def fake_text(messages: list[dict[str, Any]], seed: int, index: int) -> str:
    """A deterministic answer for one choice."""
    digest = hashlib.sha256(json.dumps([messages, seed, index], sort_keys=True).encode()).hexdigest()
    words = ["step", "add", "then", "so", "total", "is", "we", "find", "the", "value"]
    body = " ".join(words[int(c, 16) % len(words)] for c in digest[:12])
    return f"Sample {digest[:10]}: {body}. The answer is {int(digest[12:16], 16) % 1000}."


def _word_count(text: str) -> int:
    return len(text.split())


class _State:
    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.random = random.Random(settings.seed)
        self.answered: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.seeds: list[tuple[int, int]] = []  # (seed, n) of every answered request
        self.bodies: list[dict[str, Any]] = []  # the JSON body of every answered chat request

    def draw_fault(self, n: int) -> str | None:
        with self.lock:
            if self.random.random() >= self.settings.fault_rate:
                return None
            usable = [f for f in self.settings.faults if f != "fewer" or n > 1]
            return self.random.choice(usable) if usable else None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "answered_total": sum(self.answered.values()),
                "unique_answered": len(self.answered),
                "max_answers_per_key": max(self.answered.values(), default=0),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "faults": dict(self.faults),
                "seeds": list(self.seeds),
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        settings = self.state.settings
        if self.path.rstrip("/") == "/v1/models" and settings.models_status != 200:
            self._send_json(settings.models_status, {"error": {"message": "model listing unavailable"}})
        elif self.path.rstrip("/") == "/v1/models":
            entry = {
                "id": settings.model,
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": settings.owned_by,
            }
            self._send_json(200, {"object": "list", "data": [entry]})
        elif self.path.rstrip("/") == "/stats":
            self._send_json(200, self.state.snapshot())
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        state = self.state
        with state.lock:
            state.requests += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        self._counted = True
        try:
            self._chat(raw)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Stop counting this request as in flight (once)."""
        if self._counted:
            self._counted = False
            with self.state.lock:
                self.state.in_flight -= 1

    def _chat(self, raw: bytes) -> None:
        state, settings = self.state, self.state.settings
        if settings.required_key is not None:
            sent = self.headers.get("Authorization", "")
            if sent != f"Bearer {settings.required_key}":
                self._send_json(401, {"error": {"message": f"Incorrect API key provided: {sent[7:]}"}})
                return
        try:
            body = json.loads(raw)
            messages = body["messages"]
            n = int(body.get("n", 1))
            seed = int(body.get("seed", 0))
        except (ValueError, KeyError, TypeError) as error:
            self._send_json(400, {"error": {"message": f"bad request body: {error}"}})
            return
        if body.get("model") != settings.model:
            self._send_json(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
            return
        fault = state.draw_fault(n)
        if fault is not None:
            with state.lock:
                state.faults[fault] += 1
        if fault == "hang":  # the client gives up on it, so it no longer counts as in flight
            self._leave()
            time.sleep(settings.hang_s)
            self.close_connection = True
            return
        if settings.latency_s:
            time.sleep(settings.latency_s)
        if fault == "429":
            headers = {"Retry-After": str(settings.retry_after_s)}
            self._send_json(429, {"error": {"message": "rate limit reached"}}, headers)
            return
        if fault == "500":
            self._send_json(500, {"error": {"message": "internal error"}})
            return
        if fault == "malformed":
            self._send_raw(200, b'{"id": "x", "choices": [{"index": 0, "message": {"content": "trunc')
            return
        with state.lock:
            returned = state.random.randint(1, n - 1) if fault == "fewer" else n
        texts = [fake_text(messages, seed, index) for index in range(returned)]
        scripted = _scripted_logprobs(body, settings)
        if scripted is not None:
            texts = ["".join(token for token, _ in scripted["content"]) for _ in range(returned)]
        prompt_tokens = sum(_word_count(str(m.get("content", ""))) for m in messages)
        payload = {
            "id": f"chatcmpl-{request_key(body)[:12]}",
            "object": "chat.completion",
            "model": settings.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                    **({"logprobs": _logprobs_json(scripted)} if scripted is not None else {}),
                }
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sum(_word_count(t) for t in texts),
                "total_tokens": prompt_tokens + sum(_word_count(t) for t in texts),
            },
        }
        self._send_json(200, payload)
        with state.lock:
            state.answered[request_key(body)] += 1
            state.seeds.append((seed, n))
            state.bodies.append(body)


def _scripted_logprobs(body: dict[str, Any], settings: FaultSettings) -> dict[str, Any] | None:
    """The scripted tokens (cut at max_tokens) and the number of alternatives asked for, if any apply."""
    if not body.get("logprobs") or settings.logprob_script is None:
        return None
    tokens = settings.logprob_script(body)
    if tokens is None:
        return None
    limit = int(body.get("max_tokens") or len(tokens))
    return {"content": tokens[:limit], "top": int(body.get("top_logprobs") or 0)}


def _logprobs_json(scripted: dict[str, Any]) -> dict[str, Any]:
    """A choice's ``logprobs`` object in the OpenAI format."""
    content = []
    for token, alternatives in scripted["content"]:
        ranked = sorted(alternatives.items(), key=lambda item: -item[1])[: scripted["top"]]
        content.append(
            {
                "token": token,
                "logprob": alternatives.get(token, -100.0),
                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in ranked],
            }
        )
    return {"content": content}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class FaultServer:
    """The server on a background thread: ``with FaultServer(FaultSettings(...)) as server: ...``."""

    def __init__(self, settings: FaultSettings | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        self.settings = settings or FaultSettings()
        self.state = _State(self.settings)
        handler = type("FaultHandler", (_Handler,), {"state": self.state})
        self.httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """This server in its own process on a free port, started with command-line ``args``: (process, base URL).
    The process is killed when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rd_pipeline_tests.support.fault_server", "--port", "0", *args],
        cwd=Path(__file__).resolve().parents[2],  # the repository root
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the fault server did not start: {line!r}")
        yield process, line.removeprefix("listening on ")
    finally:
        process.kill()
        process.wait(timeout=10)


def server_stats(base_url: str) -> dict[str, Any]:
    """The counters of the server at ``base_url`` (``GET /stats``)."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--hang-s", type=float, default=5.0)
    parser.add_argument("--retry-after-s", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args(argv)
    settings = FaultSettings(
        model=args.model,
        latency_s=args.latency_ms / 1000.0,
        fault_rate=args.fault_rate,
        hang_s=args.hang_s,
        retry_after_s=args.retry_after_s,
        seed=args.seed,
    )
    server = FaultServer(settings, port=args.port)
    print(f"listening on {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
