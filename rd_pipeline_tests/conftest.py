"""Fixtures shared by the test modules: the built-in tiny models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_pipeline.models import TINY_RANDOM_H64, resolve_model


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The directory of the built-in tiny-random model (2-layer Llama, small BPE tokenizer, chat template)."""
    return resolve_model("tiny-random", tmp_path_factory.mktemp("tiny_base_home")).location


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny-random-h64: 64-wide attention heads (vLLM's CPU kernels do not take tiny-random's 16)."""
    return Path(resolve_model(TINY_RANDOM_H64, tmp_path_factory.mktemp("vllm_model")).location)
