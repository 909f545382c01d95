"""The known-answer experiment at its small size: the real pipeline learns a task whose answers are known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "known_answer.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("known_answer", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pipeline_learns_the_known_answer_task(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    known_answer = _load_script()
    result = known_answer.run_experiment(tmp_path, "small", seed=0)
    figures = result["figures"]
    print(result["table"])
    # The teacher was trained to be noisy, and the vote makes better labels than its single samples.
    assert 0.3 <= figures["teacher_single_sample_accuracy"] <= 0.8
    assert figures["vote_label_accuracy"] > figures["teacher_single_sample_accuracy"]
    # The SFT student learned from the voted teacher samples.
    assert figures["accuracy"]["sft_student"] > figures["accuracy"]["base_student"]
