"""Each benchmark's declarations (files, breakdown field, options) hold for its data; the config reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rd_pipeline.benchmarks import BENCHMARKS, get_benchmark
from rd_pipeline.benchmarks.sources import SAMPLES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")


@needs_data
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_declared_file_names_are_the_real_files(name):
    files = [DATA / name / file for file in get_benchmark(name).file_names]
    assert files and all(file.is_file() for file in files)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_declared_breakdown_field_is_on_every_item(name):
    bench = get_benchmark(name)
    assert all((SAMPLES / part.sample_file).is_file() for part in bench.parts)
    items = bench.load_records("builtin", None)
    if bench.breakdown_field is None:
        return
    groups = {item.meta.get(bench.breakdown_field) for item in items}
    assert None not in groups and len(groups) > 1


def test_declared_traits():
    assert {name for name, b in BENCHMARKS.items() if b.breakdown_field} == {"gsm_plus", "mmlu_pro"}
    assert [name for name, b in BENCHMARKS.items() if b.n_options] == ["mmlu_pro"]
    mmlu = get_benchmark("mmlu_pro").load_records("builtin", None)
    assert max(len(item.options) for item in mmlu) == get_benchmark("mmlu_pro").n_options


@pytest.mark.parametrize("module", ["rd_pipeline.config", "rd_pipeline.benchmarks"])
def test_config_and_registry_import_first_in_a_fresh_interpreter(module):
    """The config reads the registry, so the benchmarks package must not need the config to import."""
    code = (
        f"import {module}; from rd_pipeline.config import BenchmarkConfig; BenchmarkConfig(name='mmlu_pro')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
