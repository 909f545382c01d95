"""A step's writes are committed only when its blocking checks pass: a failed check leaves the stored data as it was.

Through a real `rd materialize` process on a real DuckDB file, and through the plain step functions (no Dagster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from rd_pipeline.config import load_config
from rd_pipeline.steps.check_registry import evaluate_checks
from rd_pipeline.steps.commit import CommitRefused, failed_checks_text
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import make_benchmark_prompts
from rd_pipeline.steps.pseudo_labels import make_pseudo_labels
from rd_pipeline.steps.results import PseudoLabels
from rd_pipeline.steps.teacher import make_teacher_responses
from rd_pipeline.store import SCHEMAS, StagedWrites, Store

SAMPLES = Path(__file__).resolve().parents[1] / "rd_pipeline" / "benchmarks" / "samples"


def tiny_config(path: Path, rd_home: Path, benchmark: dict[str, Any], **sections: Any) -> Path:
    """A one-benchmark config with tiny random models, written to ``path``."""
    config = {
        "teacher": {"ref": "tiny-random"},
        "student": {"ref": "tiny-random"},
        "benchmarks": [benchmark],
        "sampling": {"n": 2, "temperatures": [1.0], "max_new_tokens": 8, "seed": 0},
        "labeling": {"min_vote_share": 0.0, "min_valid_votes": 1},
        "paths": {"rd_home": str(rd_home)},
        **sections,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path)
    return path


def rd(*args: str, rd_home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RD_CONFIG", "RD_PRESET", "DAGSTER_HOME")}
    env.update(RD_HOME=str(rd_home), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "rd_pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_an_emptied_benchmark_file_keeps_the_stored_prompts(tmp_path: Path) -> None:
    data = tmp_path / "gsm8k"
    data.mkdir()
    shutil.copyfile(SAMPLES / "gsm8k_train_sample.jsonl", data / "train.jsonl")
    shutil.copyfile(SAMPLES / "gsm8k_test_sample.jsonl", data / "test.jsonl")
    rd_home = tmp_path / "rd"
    benchmark = {"name": "gsm8k", "source": "local", "path": str(data), "train_size": 6, "eval_size": 4}
    config = tiny_config(tmp_path / "c.yaml", rd_home, benchmark)
    select = ["materialize", "--config", str(config), "--select", "benchmark_prompts", "--partition", "gsm8k"]
    first = rd(*select, rd_home=rd_home)
    assert first.returncode == 0, first.stderr[-3000:]
    store = Store(rd_home / "rd.duckdb")
    stored = store.read("benchmark_prompts", "gsm8k")
    version = store.latest_version("benchmark_prompts", "gsm8k")
    assert len(stored) == 10

    for name in ("train.jsonl", "test.jsonl"):
        (data / name).write_text("")
    second = rd(*select, rd_home=rd_home)

    assert second.returncode != 0
    assert store.read("benchmark_prompts", "gsm8k") == stored
    assert store.latest_version("benchmark_prompts", "gsm8k") == version
    assert store.count("asset_versions") == 1


def test_failed_label_coverage_keeps_the_stored_labels_without_dagster(tmp_path: Path) -> None:
    rd_home = tmp_path / "rd"
    benchmark = {"name": "gsm8k", "source": "builtin", "train_size": 3, "eval_size": 1}
    lenient = load_config(
        tiny_config(
            tmp_path / "lenient.yaml",
            rd_home,
            benchmark,
            checks={
                "enforce": True,
                "min_label_coverage": 0.0,
                "min_mean_vote_share": 0.0,
                "min_gold_label_accuracy": 0.0,
            },
        )
    )
    ctx = StepContext(lenient)
    make_benchmark_prompts(ctx, "gsm8k")
    make_teacher_responses(ctx, "gsm8k")
    first = make_pseudo_labels(ctx, "gsm8k")
    assert first.checks and all(c.passed for c in first.checks)
    store = ctx.store
    stored = store.read("pseudo_labels", "gsm8k")
    version = store.latest_version("pseudo_labels", "gsm8k")
    assert version["data_version"] == first.data_version and len(stored) == 6

    # Other labeling settings (so the labels would differ): 3 valid votes out of 2 samples label no prompt, so
    # coverage is 0 whatever the model samples.
    strict = lenient.model_copy(
        update={
            "labeling": lenient.labeling.model_copy(update={"min_vote_share": 0.9, "min_valid_votes": 3}),
            "checks": lenient.checks.model_copy(update={"min_label_coverage": 0.5}),
        }
    )
    with pytest.raises(CommitRefused) as refused:
        make_pseudo_labels(StepContext(strict), "gsm8k")

    assert str(refused.value).startswith("pseudo_labels[gsm8k]: check label_coverage failed (coverage=0.0,")
    assert f"stored data unchanged (still version {version['data_version']}" in str(refused.value)
    assert store.read("pseudo_labels", "gsm8k") == stored
    assert store.latest_version("pseudo_labels", "gsm8k") == version


def test_a_commit_that_fails_midway_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "rd.duckdb")
    row = {"benchmark": "gsm8k", "asset": "a", "data_version": "v1", "run_id": "r", "teacher_version": ""}
    store.append("asset_versions", [row | {"upstream": "{}", "recorded_at": None}])
    staged = StagedWrites()
    two = [row | {"upstream": "{}", "recorded_at": None, "data_version": v} for v in ("v2", "v3")]
    store.stage_partition(staged, "asset_versions", "gsm8k", two)
    # A second write whose rows cannot be inserted (a NULL into a column the file declares NOT NULL).
    columns = ", ".join(
        f'"{name}" {kind}' + (" NOT NULL" if name == "margin" else "")
        for name, kind in SCHEMAS["reward_pairs"].items()
    )
    store._run(lambda c: c.execute(f"CREATE TABLE reward_pairs ({columns})"))
    pair = {
        k: None for k in ("prompt_id", "prompt", "chosen", "rejected", "margin", "split", "label_version")
    }
    store.stage_partition(
        staged, "reward_pairs", "gsm8k", pa.Table.from_pylist([{"benchmark": "gsm8k", **pair}])
    )
    with pytest.raises(Exception, match="NOT NULL"):
        store.commit(staged)
    assert [r["data_version"] for r in store.read("asset_versions")] == ["v1"]
    assert store.count("reward_pairs") == 0


def test_every_failed_check_is_named_in_declaration_order(tmp_path: Path) -> None:
    """Two blocking checks of pseudo_labels fail: the error names both, each with its details, in the order the
    asset declares them, whichever order they come in."""
    benchmark = {"name": "gsm8k", "source": "builtin", "train_size": 3, "eval_size": 1}
    config = load_config(tiny_config(tmp_path / "c.yaml", tmp_path / "rd", benchmark))
    labels = PseudoLabels(rows=6, coverage=0.0, mean_vote_share=1.0, n_labelled=3, gold_label_accuracy=0.0)
    refused = [o for o in evaluate_checks("pseudo_labels", labels, config) if o.refuses_commit]
    assert [outcome.name for outcome in refused] == ["label_coverage", "gold_label_accuracy"]

    text = failed_checks_text(refused)

    assert text.startswith("checks label_coverage, gold_label_accuracy failed: label_coverage (coverage=0.0,")
    assert "; gold_label_accuracy (gold_label_accuracy=0.0," in text
    assert failed_checks_text(refused[::-1]) == text
