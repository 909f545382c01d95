"""Freed tensor memory goes back to the OS: a generator that loads a model fixes glibc's mmap threshold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rd_pipeline.models import TINY_RANDOM, resolve_model
from rd_pipeline_tests.support.malloc import glibc

# Run in a fresh process: in a long one (a whole test session) the heap may already hold a free chunk large enough
# to serve the probe below whatever the threshold, which would make the verdict depend on what ran before.
_PROBE = """
import shutil, sys
from pathlib import Path
from rd_pipeline.config import ModelConfig
from rd_pipeline.generation import GenerationRequest, SamplingParams, make_generator
from rd_pipeline.memory import MMAP_THRESHOLD_BYTES
from rd_pipeline.models import TINY_RANDOM
from rd_pipeline_tests.support.malloc import glibc, mapped_on_its_own

libc = glibc()
generator = make_generator(ModelConfig(ref=TINY_RANDOM, batch_size=2), Path(sys.argv[1]), role="judge")
request = GenerationRequest(
    "q", ({"role": "user", "content": "Hi"},), SamplingParams(temperature=0.0, n=1, max_new_tokens=2)
)
try:
    generator.generate([request])
finally:
    generator.close()
# By default glibc raises its threshold to the size of a freed mapped block (here 16 MiB), after which a 4 MiB
# tensor would come from the heap and stay resident after it is freed.
libc.free(libc.malloc(16 * MMAP_THRESHOLD_BYTES))
print("mapped" if mapped_on_its_own(libc, 4 * MMAP_THRESHOLD_BYTES) else "from the heap")
"""


def test_after_a_model_loads_freed_blocks_no_longer_raise_the_mmap_threshold(tmp_path: Path) -> None:
    glibc()  # skips where malloc is not glibc 2.33+
    resolve_model(TINY_RANDOM, tmp_path / "model_home")
    rd_home = tmp_path / "rd_home"
    shutil.copytree(tmp_path / "model_home" / "models", rd_home / "models")
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(rd_home)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().splitlines()[-1] == "mapped"
