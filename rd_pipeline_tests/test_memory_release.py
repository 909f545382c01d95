"""Freed tensor memory goes back to the OS: a generator that loads a model fixes glibc's mmap threshold."""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
from pathlib import Path

import pytest

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation import GenerationRequest, SamplingParams, make_generator
from rd_pipeline.memory import MMAP_THRESHOLD_BYTES
from rd_pipeline.models import TINY_RANDOM, resolve_model


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _mapped_on_its_own(libc: ctypes.CDLL, size: int) -> bool:
    """Whether glibc serves a block of ``size`` bytes with a mapping of its own (unmapped again on free)."""
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblks == before + 1
    finally:
        libc.free(block)


def test_after_a_model_loads_freed_blocks_no_longer_raise_the_mmap_threshold(tmp_path: Path) -> None:
    libc = _glibc()
    resolve_model(TINY_RANDOM, tmp_path / "model_home")
    rd_home = tmp_path / "rd_home"
    shutil.copytree(tmp_path / "model_home" / "models", rd_home / "models")
    generator = make_generator(ModelConfig(ref=TINY_RANDOM, batch_size=2), rd_home, role="judge")
    request = GenerationRequest(
        "q", ({"role": "user", "content": "Hi"},), SamplingParams(temperature=0.0, n=1, max_new_tokens=2)
    )
    try:
        generator.generate([request])
    finally:
        generator.close()
    # By default glibc raises its threshold to the size of a freed mapped block (here 16 MiB), after which a
    # 4 MiB tensor would come from the heap and stay resident after it is freed.
    libc.free(libc.malloc(16 * MMAP_THRESHOLD_BYTES))
    assert _mapped_on_its_own(libc, 4 * MMAP_THRESHOLD_BYTES)
