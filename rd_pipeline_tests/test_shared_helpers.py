"""The one hash helper and the one file lock: data versions stay what they were, the lock excludes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from rd_pipeline.config import load_preset
from rd_pipeline.hashing import file_sha256, short_hash
from rd_pipeline.locks import held_lock
from rd_pipeline.steps.context import content_hash


def test_hashes_keep_their_values():
    # values computed before the helpers were merged: data versions of existing stores stay valid
    assert content_hash("gsm8k", {"b": 1, "a": [1, 2]}, None) == "8694acde586269e5"
    # (sampling and labeling: since labeling.pair_margin, a new setting of the labels, was added)
    assert load_preset("tiny").section_hash("sampling", "labeling") == "d692e7fab829882d"
    assert short_hash(["gsm8k", {"a": [1, 2], "b": 1}, None]) == "8694acde586269e5"


def test_file_sha256(tmp_path: Path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _hold(path: str, seconds: float) -> None:
    with held_lock(Path(path)):
        time.sleep(seconds)


def test_held_lock_excludes_another_process(tmp_path: Path):
    path = tmp_path / "locks" / "x.lock"
    holder = multiprocessing.get_context("spawn").Process(target=_hold, args=(str(path), 1.5))
    holder.start()
    while not path.exists():
        time.sleep(0.02)
    time.sleep(0.3)
    waited: list[bool] = []
    started = time.perf_counter()
    with held_lock(path, on_wait=lambda: waited.append(True)):
        elapsed = time.perf_counter() - started
    holder.join()
    assert waited == [True] and elapsed > 0.5
