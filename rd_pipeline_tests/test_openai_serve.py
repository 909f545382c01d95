"""The openai backend against a real ``transformers serve`` process holding the tiny random model."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rd_pipeline.config import ApiConfig, ModelConfig
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.generation.openai_backend import OpenAIGenerator
from rd_pipeline.models import resolve_model

STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> str | None:
    beside_python = Path(sys.executable).with_name("transformers")
    return str(beside_python) if beside_python.is_file() else shutil.which("transformers")


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(base_url, model id)`` of a ``transformers serve`` process on a free localhost port."""
    cli = _transformers_cli()
    if cli is None:
        pytest.skip("the `transformers` CLI is not installed (pip install 'transformers[serving]')")
    home = tmp_path_factory.mktemp("rd_home")
    checkpoint = resolve_model("tiny-random", home).location
    port = _free_port()
    log_path = home / "serve.log"
    command = [cli, "serve", checkpoint, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                pytest.skip(
                    f"`transformers serve` could not serve the local checkpoint {checkpoint}:\n{tail}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`transformers serve` not ready after {STARTUP_TIMEOUT_S}s; see {log_path}")
            time.sleep(0.3)
        yield f"{base}/v1", checkpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_generates_through_transformers_serve_with_top_up(
    served_model: tuple[str, str], tmp_path: Path
) -> None:
    base_url, model_id = served_model
    api = ApiConfig(base_url=base_url, model=model_id, api_key_env=None, timeout_s=60, max_concurrency=4)
    generator = OpenAIGenerator(
        ModelConfig(ref="tiny-random", backend="openai", api=api), tmp_path / "journal"
    )
    params = SamplingParams(temperature=0.8, n=3, max_new_tokens=8, seed=4)
    requests = [
        GenerationRequest(f"p{i}", ({"role": "user", "content": f"What is {i} + {i}?"},), params)
        for i in range(3)
    ]

    identity = generator.observe_identity()
    assert identity["backend"] == "openai" and identity["model"] == model_id
    assert identity.get("owned_by") and identity.get("model_fingerprint")  # reported by GET /v1/models

    completions, stats = generator.generate(requests)
    assert [(c.request_id, c.sample_index) for c in completions] == [
        (r.request_id, i) for r in requests for i in range(3)
    ]
    # The server ignores n: each prompt's first request returns one choice and the other two are topped up.
    assert stats.backend_requests == 9 and stats.extra["topup_samples"] == 6
    assert stats.input_tokens > 0 and 0 < stats.output_tokens <= 9 * 8
    assert all(c.output_tokens <= 8 and c.input_tokens > 0 for c in completions)

    again, again_stats = generator.generate(requests)
    assert again_stats.backend_requests == 0 and again_stats.samples_from_journal == 9
    assert [c.text for c in again] == [c.text for c in completions]
    generator.close()
