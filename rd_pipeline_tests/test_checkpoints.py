"""Checkpoints record a sha256 of every file; damaged weights are trained again or refused, never reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from rd_pipeline.config import load_preset
from rd_pipeline.steps.checkpoints import LINEAGE_FILE, latest_checkpoint, train_once
from rd_pipeline.steps.context import StepContext


def _context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[StepContext, list[str]]:
    monkeypatch.setenv("RD_HOME", str(tmp_path))
    messages: list[str] = []
    return StepContext(load_preset("tiny"), log=messages.append), messages


def _save_small_model(out: Path) -> dict[str, Any]:
    """A real (untrained) two-layer Llama saved as safetensors, standing in for a trainer's output."""
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return {"train_loss": 1.0}


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_truncated_weights_are_trained_again_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ctx, messages = _context(tmp_path, monkeypatch)
    trainings: list[Path] = []

    def train(out: Path) -> dict[str, Any]:
        trainings.append(out)
        return _save_small_model(out)

    path, _, trained = train_once(ctx, "sft_student", "v1", train, {})
    recorded = json.loads((path / LINEAGE_FILE).read_text())["files"]
    assert trained and recorded["model.safetensors"]["bytes"] == (path / "model.safetensors").stat().st_size
    assert len(recorded["model.safetensors"]["sha256"]) == 64
    assert train_once(ctx, "sft_student", "v1", train, {})[2] is False  # intact: reused

    _truncate(path / "model.safetensors")
    path, _, trained = train_once(ctx, "sft_student", "v1", train, {})

    assert trained and len(trainings) == 2
    assert any("WARNING sft_student" in m and "model.safetensors is" in m for m in messages), messages
    assert (path.with_name("v1.damaged") / "model.safetensors").is_file()
    assert train_once(ctx, "sft_student", "v1", train, {})[2] is False


def test_a_changed_weight_file_is_refused_where_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ctx, _ = _context(tmp_path, monkeypatch)
    path, _, _ = train_once(ctx, "reward_model", "v1", _save_small_model, {})
    ctx.record_version("reward_model", "", "v1")
    assert latest_checkpoint(ctx, "reward_model")[0] == path
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    weights.write_bytes(bytes(data))
    with pytest.raises(
        RuntimeError, match=r"reward_model checkpoint .* is damaged: model.safetensors does not match"
    ):
        latest_checkpoint(ctx, "reward_model")


def test_checkpoints_without_digests_are_checked_against_their_safetensors_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ctx, _ = _context(tmp_path, monkeypatch)
    path, _, _ = train_once(ctx, "rl_student", "v1", _save_small_model, {})
    lineage = json.loads((path / LINEAGE_FILE).read_text())
    del lineage["files"]  # written before digests were recorded
    (path / LINEAGE_FILE).write_text(json.dumps(lineage))
    ctx.record_version("rl_student", "", "v1")
    assert latest_checkpoint(ctx, "rl_student")[0] == path
    _truncate(path / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"model.safetensors is \d+ bytes where its header says \d+"):
        latest_checkpoint(ctx, "rl_student")
