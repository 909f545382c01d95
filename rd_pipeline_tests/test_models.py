"""Model references: tiny-random is built once and deterministically; directories and hub ids resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from rd_pipeline.models import ModelResolutionError, resolve_model


def test_tiny_random_is_built_once_and_identically(tmp_path: Path):
    first = resolve_model("tiny-random", tmp_path / "a")
    again = resolve_model("tiny-random", tmp_path / "a")
    other = resolve_model("tiny-random", tmp_path / "b")
    assert first == again
    assert first.fingerprint == other.fingerprint  # same seed, same weights, same tokenizer
    assert (Path(first.location) / "model.safetensors").is_file()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(first.location)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2 + 2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_local_directory_and_hub_id(tmp_path: Path):
    tiny = resolve_model("tiny-random", tmp_path)
    local = resolve_model(tiny.location, tmp_path)
    assert local.kind == "local" and local.fingerprint == tiny.fingerprint
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path, revision="main")
    assert (hub.kind, hub.location, hub.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")
    assert hub.fingerprint != resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path, "v2").fingerprint


def test_bad_references_fail_clearly(tmp_path: Path):
    with pytest.raises(ModelResolutionError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-checkpoint"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelResolutionError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
