"""Fixtures shared by the test modules (the built-in tiny models, built once per session), and the order in which
pytest-xdist hands the modules to its workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rd_pipeline.models import TINY_RANDOM_H64, resolve_model

# The modules that take longest (over 40 s each in a serial run on 2 cores), longest first. `make test` hands whole
# modules to two xdist workers in collection order (--dist loadfile --no-loadscope-reorder); starting these first
# keeps one of them from starting last on one worker while the other worker sits idle. Only the balance depends on
# this list.
LONGEST_MODULES = (
    "test_training_launch",
    "test_pipeline_tiny",
    "test_cli",
    "test_gpu_check",
    "test_postgres_instance",
    "test_known_answer",
    "test_training_guard",
    "test_training_resume",
    "test_eval_key",
    "test_concurrency",
    "test_api_materialization",
    "test_eval_only_partition",
    "test_tracking",
    "test_ui_browser",
    "test_generation_vllm",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the modules of LONGEST_MODULES first, in its order, then the rest as collected (every
    worker collects the same order, as xdist requires). A run in one process keeps the collected order."""
    if not hasattr(config, "workerinput"):
        return
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="module", autouse=True)
def module_environment() -> Iterator[None]:
    """The process environment as it was before the module, restored after it: what a module's tests or the
    libraries they import set (importing TRL sets VLLM_LOGGING_LEVEL=ERROR, Dagster runs set DAGSTER_HOME) never
    reaches the modules that run after it in the same process, whichever modules an xdist worker gets."""
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The directory of the built-in tiny-random model (2-layer Llama, small BPE tokenizer, chat template)."""
    return resolve_model("tiny-random", tmp_path_factory.mktemp("tiny_base_home")).location


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny-random-h64: 64-wide attention heads (vLLM's CPU kernels do not take tiny-random's 16)."""
    return Path(resolve_model(TINY_RANDOM_H64, tmp_path_factory.mktemp("vllm_model")).location)
