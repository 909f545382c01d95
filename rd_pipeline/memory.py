"""Giving freed tensor memory back to the operating system (glibc's malloc on Linux).

glibc serves a request above its mmap threshold with a mapping of its own, which ``free`` unmaps; smaller ones come
from the heap. The threshold starts at 128 KiB and, by default, rises to the size of every mapped block freed (up
to 32 MiB). After a model's first forward passes, CPU tensors of a few MiB (KV cache layers, activations, the
per-step copies of a growing cache) are therefore carved from the heap, which fragments and stays mapped after the
tensors and the model are freed: every step of a long ``rd materialize`` process starts from a higher resident set
than the last. A fixed threshold stops the rise, so those tensors are unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

MMAP_THRESHOLD_BYTES = 1 << 20
"""Allocations of at least this size are mapped on their own and unmapped when freed (a fixed threshold)."""
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_mmap_threshold_fixed() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES`` (idempotent); False where malloc is not glibc's."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_heap() -> None:
    """Return the free memory at the top of glibc's heap to the operating system (no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
