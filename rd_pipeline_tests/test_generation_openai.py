"""The openai backend against a real local HTTP server that injects faults (no mocked client)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from rd_pipeline.config import ApiConfig, ModelConfig
from rd_pipeline.generation.api_client import backoff_delay, parse_chat_body, parse_retry_after
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.journal import Journal, identity_version
from rd_pipeline.generation.openai_backend import ApiError, OpenAIGenerator
from rd_pipeline.generation.openai_requests import derived_seed
from rd_pipeline.generation.rate_limit import TokenBucket
from rd_pipeline.observed import IdentityUnobservable
from rd_pipeline_tests.support.fault_server import FAULTS, FaultServer, FaultSettings, fake_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-SECRET-7f3a9c2e41"


def make_generator(base_url: str, journal_dir: Path, **api_fields) -> OpenAIGenerator:
    fields = {"base_url": base_url, "model": "fake-model", "timeout_s": 1.0, "max_concurrency": 8}
    fields.update(api_fields)
    model = ModelConfig(ref="teacher", backend="openai", api=ApiConfig(**fields))
    return OpenAIGenerator(model, journal_dir, backoff_base_s=0.05, progress_interval_s=0.05)


def make_requests(count: int, n: int, seed: int = 7, max_new_tokens: int = 32) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"q{i}",
            (
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
            ),
            SamplingParams(temperature=0.7, n=n, max_new_tokens=max_new_tokens, seed=seed),
        )
        for i in range(count)
    ]


def expected_texts(request: GenerationRequest, index: int) -> set[str]:
    """What the server answers for a sample: choice ``index`` of the batched request, or its top-up."""
    messages = [dict(m) for m in request.messages]
    return {
        fake_text(messages, request.params.seed, index),
        fake_text(messages, derived_seed(request.params.seed, index), 0),
    }


def test_thirty_percent_faults_complete_without_duplicates(tmp_path: Path) -> None:
    settings = FaultSettings(fault_rate=0.3, hang_s=2.5, latency_s=0.02, seed=1)
    requests = make_requests(60, n=4)
    progress_calls: list[tuple[int, int]] = []
    with FaultServer(settings) as server:
        generator = make_generator(server.base_url, tmp_path, max_retries=10)
        completions, stats = generator.generate(
            requests, progress=lambda d, t, s: progress_calls.append((d, t))
        )
        first = server.stats()
        again, again_stats = generator.generate(requests)
        second = server.stats()
        generator.close()

    assert set(first["faults"]) == set(FAULTS), first["faults"]  # every fault kind was exercised
    assert [(c.request_id, c.sample_index) for c in completions] == [
        (r.request_id, i) for r in requests for i in range(4)
    ]
    by_id = {r.request_id: r for r in requests}
    for completion in completions:
        assert completion.text in expected_texts(by_id[completion.request_id], completion.sample_index)
    # Nothing asked twice, every answered request accounted once, concurrency bounded.
    assert first["max_answers_per_key"] == 1
    assert stats.backend_requests == first["answered_total"]
    assert first["max_in_flight"] <= 8
    assert stats.samples_generated == 240 and stats.samples_from_journal == 0
    assert stats.extra["failed_attempts"] >= 1 and stats.extra["topup_samples"] >= 1
    assert stats.output_tokens > 0 and stats.input_tokens > 0
    assert progress_calls[-1] == (240, 240)
    # The journal holds every sample exactly once, in the file named after the identity.
    journal_file = tmp_path / f"{identity_version(generator.identity)}.sqlite"
    assert Journal(journal_file).count() == 240
    # A second call is served from the journal and sends nothing.
    assert [c.text for c in again] == [c.text for c in completions]
    assert again_stats.samples_from_journal == 240 and again_stats.backend_requests == 0
    assert second["requests"] == first["requests"]


def test_retries_run_out_with_a_clear_error_and_nothing_journaled(tmp_path: Path) -> None:
    settings = FaultSettings(fault_rate=1.0, faults=("500",))
    with FaultServer(settings) as server:
        generator = make_generator(server.base_url, tmp_path, max_retries=2, max_concurrency=2)
        with pytest.raises(ApiError) as caught:
            generator.generate(make_requests(3, n=2))
        sent = server.stats()["requests"]
    message = str(caught.value)
    assert "gave up after 3 attempts" in message and "HTTP 500" in message
    assert server.base_url in message and "fake-model" in message
    assert generator.journal.count() == 0
    assert sent <= 3 * 3  # stops sending once a request has failed for good


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    settings = FaultSettings(fault_rate=1.0, faults=("429",), retry_after_s=1)
    with FaultServer(settings) as server:
        generator = make_generator(server.base_url, tmp_path, max_retries=1)
        started = time.monotonic()
        with pytest.raises(ApiError, match="HTTP 429"):
            generator.generate(make_requests(1, n=1))
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0  # backoff alone would be 0.05 s


def test_client_errors_fail_fast_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RD_TEST_KEY", SECRET)
    settings = FaultSettings(required_key="the-right-key")  # the 401 body echoes the key it was sent
    with FaultServer(settings) as server:
        generator = make_generator(server.base_url, tmp_path, api_key_env="RD_TEST_KEY", max_concurrency=4)
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            generator.generate(make_requests(40, n=2))
        elapsed = time.monotonic() - started
        sent = server.stats()["requests"]
    message = str(caught.value)
    assert "HTTP 401 (key from $RD_TEST_KEY)" in message
    assert server.base_url in message and "'fake-model'" in message
    assert "Incorrect API key provided: ***" in message
    assert SECRET not in message and SECRET not in caplog.text
    assert caught.value.status == 401
    assert sent <= 4 and elapsed < 2.0  # no retries and no new requests after the refusal
    assert generator.journal.count() == 0


def test_unknown_model_fails_fast(tmp_path: Path) -> None:
    with FaultServer() as server:
        generator = make_generator(server.base_url, tmp_path, model="no-such-model")
        assert "model_fingerprint" not in generator.observe_identity()  # /models does not list it; tolerated
        with pytest.raises(ApiError, match="HTTP 404.*does not exist"):
            generator.generate(make_requests(2, n=1))


def test_budget_stops_sending_and_a_rerun_fills_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    requests = make_requests(12, n=1, max_new_tokens=20)
    price = {"price_input_per_m": 0.0, "price_output_per_m": 1_000_000.0}  # one dollar per output token
    with FaultServer() as server:
        generator = make_generator(
            server.base_url, tmp_path, max_concurrency=1, max_budget_usd=100.0, **price
        )
        completions, stats = generator.generate(requests)
        assert stats.budget_exhausted
        assert 0 < len(completions) < 12
        assert stats.cost_usd == pytest.approx(stats.output_tokens) and stats.cost_usd <= 100.0
        assert stats.samples_generated == len(completions) == stats.backend_requests
        assert stats.extra["samples_not_sent"] == 12 - len(completions)
        assert generator.journal.count() == len(completions)
        assert "budget of $100.0000" in caplog.text and "would be exceeded" in caplog.text
        kept = len(completions)

        richer = make_generator(server.base_url, tmp_path, max_budget_usd=10_000.0, **price)
        rest, rest_stats = richer.generate(requests)
        assert not rest_stats.budget_exhausted
        assert len(rest) == 12 and rest_stats.samples_from_journal == kept
        assert rest_stats.backend_requests == 12 - kept
        assert server.stats()["max_answers_per_key"] == 1


def test_fewer_choices_are_topped_up_with_distinct_seeds(tmp_path: Path) -> None:
    settings = FaultSettings(fault_rate=1.0, faults=("fewer",))  # every n > 1 request gets fewer choices
    requests = make_requests(5, n=4, seed=11)
    with FaultServer(settings) as server:
        completions, stats = make_generator(server.base_url, tmp_path).generate(requests)
        seeds = server.stats()["seeds"]
    assert len(completions) == 20
    assert len({(c.request_id, c.sample_index) for c in completions}) == 20
    batched = [s for s in seeds if s[1] > 1]
    singles = [s for s in seeds if s[1] == 1]
    assert batched == [(11, 4)] * 5
    assert stats.extra["topup_samples"] == len(singles) > 0
    allowed = {derived_seed(11, i) for i in range(1, 4)}
    assert {seed for seed, _ in singles} <= allowed and 11 not in allowed
    assert len(allowed) == 3
    by_id = {r.request_id: r for r in requests}
    for completion in completions:
        assert completion.text in expected_texts(by_id[completion.request_id], completion.sample_index)


def test_a_partly_journaled_request_asks_only_for_its_missing_samples(tmp_path: Path) -> None:
    with FaultServer() as server:
        generator = make_generator(server.base_url, tmp_path)
        generator.generate(make_requests(3, n=2, seed=5))
        more, stats = generator.generate(make_requests(3, n=5, seed=5))
        seeds = server.stats()["seeds"]
    assert len(more) == 15 and stats.samples_from_journal == 6 and stats.samples_generated == 9
    assert seeds[3:] == [(derived_seed(5, 2), 3)] * 3  # indices 2..4 in one request each


def test_secret_never_reaches_journal_logs_or_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RD_TEST_KEY", SECRET)
    settings = FaultSettings(required_key=SECRET, fault_rate=0.3, hang_s=2.0, seed=3)
    with FaultServer(settings) as server:
        generator = make_generator(server.base_url, tmp_path, api_key_env="RD_TEST_KEY", max_retries=10)
        completions, _ = generator.generate(make_requests(20, n=3), progress=lambda d, t, s: print(d, t, s))
        assert len(completions) == 60  # the server accepted the key, so it was sent
        texts = [repr(generator), json.dumps(generator.identity), repr(generator.api)]
        generator.close()
    out, err = capfd.readouterr()
    assert SECRET not in out + err + caplog.text + "".join(texts)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(SECRET.encode() not in p.read_bytes() for p in files)


def test_requests_per_minute_limit_paces_requests(tmp_path: Path) -> None:
    with FaultServer() as server:
        generator = make_generator(server.base_url, tmp_path, requests_per_minute=600.0)  # 10 per second
        started = time.monotonic()
        completions, _ = generator.generate(make_requests(25, n=1))
        elapsed = time.monotonic() - started
    assert len(completions) == 25
    assert elapsed >= 1.3  # a burst of 10, then 15 more at 10 per second


def test_retry_after_and_backoff_parsing() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(httpx.Headers({"Retry-After": future})) <= 31
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None
    delays = [backoff_delay(3, 0.5, None) for _ in range(50)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1
    assert backoff_delay(0, 0.5, 7.0) == 7.0
    with pytest.raises(ValueError, match="not JSON"):
        parse_chat_body(b'{"choices": [')
    with pytest.raises(ValueError, match="no 'choices'"):
        parse_chat_body(b'{"choices": []}')
    texts, prompt, completion = parse_chat_body(
        b'{"choices": [{"index": 1, "message": {"content": "b"}}, {"index": 0, "message": {"content": "a"}}]}'
    )
    assert texts == ["a", "b"] and prompt is None and completion is None


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from rd_pipeline.config import ApiConfig, ModelConfig
    from rd_pipeline.generation.base import GenerationRequest, SamplingParams
    from rd_pipeline.generation.openai_backend import OpenAIGenerator

    base_url, journal_dir = sys.argv[1], Path(sys.argv[2])
    api = ApiConfig(base_url=base_url, model="fake-model", timeout_s=1.0, max_concurrency=8, max_retries=10)
    model = ModelConfig(ref="t", backend="openai", api=api)
    generator = OpenAIGenerator(model, journal_dir, backoff_base_s=0.05)
    params = SamplingParams(0.8, n=4, seed=1)
    messages = [({"role": "user", "content": f"item {i}"},) for i in range(50)]
    requests = [GenerationRequest(f"q{i}", m, params) for i, m in enumerate(messages)]
    completions, stats = generator.generate(requests)
    print(json.dumps({"samples": len(completions), "generated": stats.samples_generated,
                      "from_journal": stats.samples_from_journal}))
    """
)


def test_kill_nine_halfway_then_rerun_completes_without_repeats(tmp_path: Path) -> None:
    script = tmp_path / "generate.py"
    script.write_text(KILL_SCRIPT)
    journal_dir = tmp_path / "journal"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    settings = FaultSettings(latency_s=0.2, fault_rate=0.3, hang_s=2.0, seed=5)
    with FaultServer(settings) as server:
        command = [sys.executable, str(script), server.base_url, str(journal_dir)]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        journaled = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            files = list(journal_dir.glob("*.sqlite"))
            if files:
                try:
                    with sqlite3.connect(files[0], timeout=5) as db:
                        journaled = db.execute("SELECT count(*) FROM completions").fetchone()[0]
                except sqlite3.OperationalError:
                    journaled = 0
            if journaled >= 80:
                break
            time.sleep(0.01)
        assert child.poll() is None, "the run finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
        at_kill = server.stats()
        assert 80 <= journaled < 200

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        final = server.stats()

    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["samples"] == 200 and report["from_journal"] >= 80
    assert report["generated"] + report["from_journal"] == 200
    (journal_file,) = journal_dir.glob("*.sqlite")
    with sqlite3.connect(journal_file) as db:
        rows = db.execute("SELECT request_id, sample_index FROM completions").fetchall()
    assert len(rows) == len(set(rows)) == 200
    # Only requests in flight at the kill may be answered twice; concurrency bounds how many there were.
    repeated = final["answered_total"] - final["unique_answered"]
    assert repeated <= min(8, at_kill["answered_total"])
    assert final["max_answers_per_key"] <= 2


def test_generate_works_when_called_inside_a_running_event_loop(tmp_path: Path) -> None:
    with FaultServer() as server:
        generator = make_generator(server.base_url, tmp_path)

        async def caller() -> int:
            completions, _ = generator.generate(make_requests(3, n=2))
            return len(completions)

        assert asyncio.run(caller()) == 6


def test_token_bucket_waits_for_refill_and_takes_back_unused_tokens() -> None:
    async def scenario() -> tuple[float, float]:
        bucket = TokenBucket(per_minute=6000.0, capacity=100.0)  # 100 tokens per second
        started = time.monotonic()
        await bucket.acquire(100)  # the full bucket: no wait
        await bucket.acquire(50)  # half a second of refill
        waited = time.monotonic() - started
        bucket.give_back(50)  # the estimate was 50 too high
        started = time.monotonic()
        await bucket.acquire(40)
        return waited, time.monotonic() - started

    waited, after_refund = asyncio.run(scenario())
    assert 0.4 <= waited <= 0.8
    assert after_refund < 0.1


def test_identity_is_observed_once_and_kept_through_a_listing_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    requests = make_requests(3, n=2)
    with FaultServer() as server:
        generator = make_generator(server.base_url, tmp_path)
        with pytest.raises(RuntimeError, match="call observe_identity"):
            generator.identity  # noqa: B018 - reading it is the test: no implicit network call
        identity = generator.observe_identity()
        assert identity["model_fingerprint"] and generator.identity == identity
        first, _ = generator.generate(requests)

        server.settings.models_status = 503
        again = make_generator(server.base_url, tmp_path)
        assert again.observe_identity() == identity
        assert "keeping the identity last observed" in caplog.text
        completions, stats = again.generate(requests)
        assert stats.backend_requests == 0 and [c.text for c in completions] == [c.text for c in first]

        server.settings.models_status, server.settings.owned_by = 200, "new-owner"  # a real change of model
        changed = make_generator(server.base_url, tmp_path).observe_identity()
        assert (
            changed["owned_by"] == "new-owner"
            and changed["model_fingerprint"] != identity["model_fingerprint"]
        )
        assert "reports a changed model 'fake-model'" in caplog.text

        server.settings.models_status = 503
        sent = server.stats()["requests"]
        fresh = make_generator(server.base_url, tmp_path / "fresh")
        with pytest.raises(IdentityUnobservable, match="no earlier observation is recorded"):
            fresh.generate(requests)
        assert server.stats()["requests"] == sent
