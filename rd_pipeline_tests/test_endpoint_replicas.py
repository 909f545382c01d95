"""Several replicas of one model behind the openai backend: spreading, health, failover, identity, sampling fields.

Real local HTTP servers throughout: fault servers in their own processes (one is killed mid-run) and a small
recording server in this process that keeps every request body it receives.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rd_pipeline.config import ApiConfig, ConfigError, ModelConfig, parse_config
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.endpoints import EndpointPool
from rd_pipeline.generation.journal import identity_version
from rd_pipeline.generation.openai_backend import OpenAIGenerator
from rd_pipeline.generation.openai_requests import derived_seed
from rd_pipeline_tests.support.fault_server import (
    FaultServer,
    FaultSettings,
    fake_text,
    server_process,
    server_stats,
)


def make_generator(journal_dir: Path, **api_fields: Any) -> OpenAIGenerator:
    fields: dict[str, Any] = {
        "model": "fake-model",
        "api_key_env": None,
        "timeout_s": 2.0,
        "max_concurrency": 4,
    }
    fields.update(api_fields)
    model = ModelConfig(ref="teacher", backend="openai", api=ApiConfig(**fields))
    return OpenAIGenerator(model, journal_dir, backoff_base_s=0.05, progress_interval_s=0.05)


def make_requests(count: int, n: int, seed: int = 3) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"q{i}",
            ({"role": "user", "content": f"What is {i} times {i}?"},),
            SamplingParams(temperature=0.8, n=n, max_new_tokens=16, top_p=0.95, seed=seed),
        )
        for i in range(count)
    ]


# ------------------------------------------------------------------------------------------- the pool itself


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pool_spreads_takes_out_and_brings_back() -> None:
    clock = FakeClock()
    pool = EndpointPool(["http://a/v1", "http://b/v1/", "http://c/v1"], cooldown_s=10, clock=clock)
    assert [e.base_url for e in pool.endpoints] == ["http://a/v1", "http://b/v1", "http://c/v1"]
    # Nothing in flight: picks go round the replicas in turn.
    assert sorted(pool.pick().base_url for _ in range(3)) == ["http://a/v1", "http://b/v1", "http://c/v1"]
    # The least busy replica is preferred.
    a, b, c = pool.endpoints
    a.in_flight, b.in_flight, c.in_flight = 3, 0, 2
    assert pool.pick() is b

    pool.mark_failed(b, "connection refused")
    assert b not in pool.healthy() and pool.pick() is c
    # Failures of requests already in flight when it went down do not lengthen its time out.
    clock.now += 5
    pool.mark_failed(b, "connection refused")
    assert b.down_until == 110.0 and b.failures == 1
    clock.now += 5.1  # its cooldown is over: tried again
    assert b in pool.healthy() and pool.pick() is b
    pool.mark_failed(b, "still refused")  # a second failure in a row: out twice as long
    assert b.down_until == pytest.approx(clock.now + 20)
    pool.mark_ok(b)
    assert b in pool.healthy() and b.failures == 0 and b.answered == 1

    # All out: the one due back first is tried, so a request is never stuck.
    for endpoint, delay in ((a, 0), (b, 0), (c, 0)):
        clock.now += delay
        pool.mark_failed(endpoint, "down")
    a.down_until, b.down_until, c.down_until = clock.now + 3, clock.now + 1, clock.now + 2
    assert pool.healthy() == [] and pool.pick() is b


def test_config_names_replicas_one_way() -> None:
    api = ApiConfig(base_urls=["http://x:1/v1/", "http://y:2/v1"])
    assert api.endpoint_urls() == ["http://x:1/v1", "http://y:2/v1"]
    assert ApiConfig(base_url="http://z/v1/").endpoint_urls() == ["http://z/v1"]
    teacher = {"ref": "t", "backend": "openai"}
    with pytest.raises(ConfigError, match="teacher.api: .*base_url .*or base_urls"):
        parse_config(
            {
                "teacher": {**teacher, "api": {"base_url": "http://a/v1", "base_urls": ["http://b/v1"]}},
                "student": {"ref": "tiny-random"},
            }
        )
    # A dumped config (base_urls: [] beside the default base_url) loads again as it was.
    dumped = parse_config(
        {"teacher": {**teacher, "api": {"base_url": "http://c/v1"}}, "student": {"ref": "s"}}
    )
    assert parse_config(dumped.model_dump(mode="json")).teacher.api.endpoint_urls() == ["http://c/v1"]
    replicas = parse_config(
        {
            "teacher": {**teacher, "api": {"base_urls": ["http://a/v1", "http://b/v1"]}},
            "student": {"ref": "s"},
        }
    )
    again = parse_config(replicas.model_dump(mode="json"))
    assert again.teacher.api.endpoint_urls() == ["http://a/v1", "http://b/v1"]
    with pytest.raises(ConfigError, match="lists a URL twice"):
        parse_config(
            {
                "teacher": {**teacher, "api": {"base_urls": ["http://a/v1", "http://a/v1/"]}},
                "student": {"ref": "tiny-random"},
            }
        )
    with pytest.raises(ConfigError, match=r"sampling_extras cannot set \['temperature'\]"):
        parse_config(
            {
                "teacher": {**teacher, "api": {"sampling_extras": {"temperature": 0.1}}},
                "student": {"ref": "tiny-random"},
            }
        )


# ------------------------------------------------------------------------------------------ real replicas


def test_one_replica_killed_mid_run_every_sample_once(tmp_path: Path) -> None:
    """Two replicas in their own processes; one is SIGKILLed mid-run; the other finishes every sample."""
    count, n = 40, 2
    requests = make_requests(count, n)
    with (
        server_process("--latency-ms", "60") as (doomed, url_a),
        server_process("--latency-ms", "60") as (
            _,
            url_b,
        ),
    ):
        generator = make_generator(tmp_path, base_urls=[url_a, url_b], max_retries=3, endpoint_cooldown_s=60)
        outcome: dict[str, Any] = {}

        def generate() -> None:
            try:
                outcome["result"] = generator.generate(requests)
            except BaseException as error:  # reported by the assertion below
                outcome["error"] = error

        worker = threading.Thread(target=generate)
        worker.start()
        deadline = time.monotonic() + 60
        while server_stats(url_a)["answered_total"] < 5:
            assert time.monotonic() < deadline and worker.is_alive(), f"replica A never got going: {outcome}"
            time.sleep(0.01)
        doomed.kill()
        doomed.wait(timeout=10)
        worker.join(timeout=120)
        assert not worker.is_alive(), "generation hung after a replica died"
        assert "error" not in outcome, f"generation failed: {outcome.get('error')!r}"
        survivor = server_stats(url_b)

    completions, stats = outcome["result"]
    assert len(completions) == count * n
    assert len({(c.request_id, c.sample_index) for c in completions}) == count * n
    by_id = {r.request_id: r for r in requests}
    for c in completions:
        messages = [dict(m) for m in by_id[c.request_id].messages]
        seed = by_id[c.request_id].params.seed
        assert c.text in {
            fake_text(messages, seed, c.sample_index),
            fake_text(messages, derived_seed(seed, c.sample_index), 0),
        }
    # Each request was answered exactly once: one answer per prompt, none asked again after the failover.
    assert stats.backend_requests == count and stats.samples_generated == count * n
    answers = generator.answers_by_endpoint
    assert answers[url_a] > 0 and answers[url_b] > 0, answers  # both served, A until it died
    assert answers[url_a] + answers[url_b] == count
    assert survivor["answered_total"] == answers[url_b] and survivor["max_answers_per_key"] == 1
    # A rerun reads everything from the journal and sends nothing.
    again, again_stats = generator.generate(requests)
    generator.close()
    assert again_stats.backend_requests == 0 and again_stats.samples_from_journal == count * n
    assert [c.text for c in again] == [c.text for c in completions]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_replica_down_at_start_is_retried_and_rejoins(tmp_path: Path) -> None:
    """A replica refusing connections is taken out; once it answers again after its cooldown, it gets work."""
    port = free_port()
    late_url = f"http://127.0.0.1:{port}/v1"
    requests = make_requests(60, n=1)
    with FaultServer(FaultSettings(latency_s=0.05)) as steady:
        generator = make_generator(
            tmp_path, base_urls=[late_url, steady.base_url], endpoint_cooldown_s=0.2, max_concurrency=2
        )
        identity = generator.observe_identity()  # observed now, with the late replica still down
        late = FaultServer(FaultSettings(latency_s=0.05), port=port)
        starter = threading.Timer(0.6, late.start)
        starter.start()
        try:
            completions, stats = generator.generate(requests)
        finally:
            starter.join()
            late_answers = late.stats()["answered_total"]
            late.stop()
        generator.close()
    assert len(completions) == 60 and stats.backend_requests == 60
    assert generator.answers_by_endpoint[late_url] == late_answers > 0
    assert generator.answers_by_endpoint[steady.base_url] == steady.stats()["answered_total"]
    assert identity["model"] == "fake-model" and "model_fingerprint" in identity


# ---------------------------------------------------------------------- identity and explicit sampling fields


class RecordingServer:
    """An OpenAI-compatible server in this process that keeps every chat request body it receives."""

    def __init__(self, owned_by: str = "recorder") -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
                pass

            def _json(self, payload: Any) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._json({"data": [{"id": "fake-model", "owned_by": owned_by, "created": time.time()}]})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(body)
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": f"answer {i}"}}
                    for i in range(body.get("n", 1))
                ]
                self._json({"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> RecordingServer:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_identity_is_the_model_not_the_replica_list(tmp_path: Path) -> None:
    with RecordingServer() as a, RecordingServer() as b, RecordingServer(owned_by="someone-else") as other:
        both = make_generator(tmp_path, base_urls=[a.base_url, b.base_url]).observe_identity()
        swapped = make_generator(tmp_path, base_urls=[b.base_url, a.base_url]).observe_identity()
        alone = make_generator(tmp_path, base_url=b.base_url).observe_identity()
        assert both == swapped == alone
        assert not any(a.base_url in value or b.base_url in value for value in both.values())
        assert identity_version(both) == identity_version(alone)
        # Servers that report different models are not replicas of one model.
        with pytest.raises(ValueError, match="replicas of one model"):
            _ = make_generator(tmp_path, base_urls=[a.base_url, other.base_url]).observe_identity()


def test_every_sampling_setting_is_sent_explicitly(tmp_path: Path) -> None:
    """A server that fills missing fields from its own defaults (vLLM's generation_config) has none to fill."""
    extras = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
    requests = make_requests(2, n=3, seed=11)
    with RecordingServer() as server:
        plain = make_generator(tmp_path, base_url=server.base_url)
        plain.generate(requests[:1])
        generator = make_generator(tmp_path, base_url=server.base_url, sampling_extras=extras)
        completions, _ = generator.generate(requests[1:])
    assert len(completions) == 3
    first, second = server.bodies
    expected = {
        "model": "fake-model",
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 16,
        "seed": 11,
        "n": 3,
    }
    assert {k: first[k] for k in expected} == expected
    assert set(first) == set(expected) | {"messages"}
    assert second == {**first, "messages": second["messages"], **extras}
    # The extra fields change what the model samples, so they are part of its identity (and journal).
    assert json.loads(generator.identity["sampling_extras"]) == extras
    assert identity_version(generator.identity) != identity_version(plain.identity)
