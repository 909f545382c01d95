"""Model references: tiny-random (and tiny-random-h64) are built once and deterministically; directories and hub
ids resolve."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from rd_pipeline.config import ModelConfig
from rd_pipeline.generation.base import local_model_identity
from rd_pipeline.models import TINY_RANDOM, TINY_RANDOM_H64, ModelResolutionError, resolve_model
from rd_pipeline.observed import IdentityUnobservable


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


def test_tiny_random_h64_has_64_wide_heads_and_the_tiny_random_tokenizer(tmp_path: Path):
    """The second built-in tiny model: built locally, deterministic, heads vLLM's attention kernels accept."""
    import json

    h64 = resolve_model(TINY_RANDOM_H64, tmp_path / "a")
    assert h64.kind == "tiny-random" and h64.ref == TINY_RANDOM_H64
    assert Path(h64.location) == tmp_path / "a" / "models" / "base" / TINY_RANDOM_H64
    assert resolve_model(TINY_RANDOM_H64, tmp_path / "b").fingerprint == h64.fingerprint
    tiny = resolve_model(TINY_RANDOM, tmp_path / "a")
    assert tiny.fingerprint != h64.fingerprint
    config = json.loads((Path(h64.location) / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    tiny_config = json.loads((Path(tiny.location) / "config.json").read_text())
    assert tiny_config["hidden_size"] // tiny_config["num_attention_heads"] == 16  # tiny-random is unchanged
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (Path(h64.location) / name).read_bytes() == (Path(tiny.location) / name).read_bytes()


def test_local_directory_and_hub_id(tmp_path: Path):
    tiny = resolve_model("tiny-random", tmp_path)
    local = resolve_model(tiny.location, tmp_path)
    assert local.kind == "local" and local.fingerprint == tiny.fingerprint
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path, revision=commit)
    assert (hub.kind, hub.location, hub.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", commit)


def test_fingerprint_is_the_content_not_the_place(tmp_path: Path):
    """Every byte counts (not only the first MiB of a file), and where the directory lies does not."""
    checkpoint = tmp_path / "a" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    weights = bytearray(random.Random(0).randbytes(3 << 20))
    (checkpoint / "model.safetensors").write_bytes(weights)
    before = resolve_model(str(checkpoint), tmp_path)
    copied = shutil.copytree(checkpoint, tmp_path / "b" / "moved", copy_function=shutil.copyfile)  # new times
    after = resolve_model(str(copied), tmp_path)
    assert after.fingerprint == before.fingerprint
    model = ModelConfig(ref="student")
    assert local_model_identity("transformers", after, model) == local_model_identity(
        "transformers", before, model
    )
    weights[-1] ^= 0xFF  # a change at the end of the weights, with the same size
    (copied / "model.safetensors").write_bytes(weights)
    assert resolve_model(str(copied), tmp_path).fingerprint != before.fingerprint


def test_hub_model_is_identified_by_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Without a revision, a hub model is the commit its ``main`` points to in the local cache; loading pins it."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # the hub itself is never asked here
    repo = cache / "models--org--tiny"
    old, new = "a" * 40, "b" * 40
    for commit in (old, new):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(old)
    first = resolve_model("org/tiny", tmp_path)
    assert (first.revision, first.fingerprint) == (old, resolve_model("org/tiny", tmp_path, old).fingerprint)
    (repo / "refs" / "main").write_text(new)  # new weights upstream, downloaded
    second = resolve_model("org/tiny", tmp_path)
    assert second.revision == new and second.fingerprint != first.fingerprint
    with pytest.raises(IdentityUnobservable, match="Hugging Face hub is unavailable"):
        resolve_model("org/not-downloaded", tmp_path)


def test_bad_references_fail_clearly(tmp_path: Path):
    with pytest.raises(ModelResolutionError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-checkpoint"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelResolutionError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
