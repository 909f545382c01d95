"""The Hugging Face model folder of an exported checkpoint: weights (a LoRA adapter merged into its base),
config, tokenizer and chat template, so that ``from_pretrained`` loads it as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rd_pipeline.export.facts import ExportError
from rd_pipeline.models import RECORD_FILES, ModelResolutionError, resolve_model
from rd_pipeline.steps.checkpoints import LINEAGE_FILE

ADAPTER_CONFIG = "adapter_config.json"
# What a checkpoint folder holds besides the model: the pipeline's own records and trainer leftovers.
NOT_MODEL_FILES = {LINEAGE_FILE, *RECORD_FILES, "training_args.bin", "README.md"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def is_adapter(checkpoint: Path) -> bool:
    """Whether a checkpoint holds a PEFT adapter rather than full weights."""
    return (Path(checkpoint) / ADAPTER_CONFIG).is_file()


def write_model_files(checkpoint: Path, target: Path, asset: str, rd_home: Path, student_ref: str) -> None:
    """Write the loadable model of ``checkpoint`` into ``target``: its files as they are, or, for a PEFT
    adapter, the adapter merged into its base model. A tokenizer or chat template the checkpoint lacks comes
    from the base student (``student_ref``)."""
    target.mkdir(parents=True, exist_ok=True)
    if is_adapter(checkpoint):
        _merge_adapter(checkpoint, target, asset, rd_home)
    else:
        for file in sorted(Path(checkpoint).iterdir()):
            if file.is_file() and file.name not in NOT_MODEL_FILES and not file.name.startswith("."):
                shutil.copy2(file, target / file.name)
    if not has_tokenizer(target) or not has_chat_template(target):
        _copy_tokenizer(_load_location(student_ref, rd_home), target)
    if not has_chat_template(target):
        raise ExportError(
            f"{asset}: neither the checkpoint {checkpoint} nor the student {student_ref!r} has a chat template"
        )
    if asset == "reward_model":
        check_sequence_classifier(target)


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def has_chat_template(folder: Path) -> bool:
    """A chat template in ``chat_template.jinja`` or in ``tokenizer_config.json``."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def check_sequence_classifier(folder: Path) -> None:
    """A reward model must load as a one-score sequence classifier that can score padded batches."""
    config = json.loads((Path(folder) / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ExportError(
            f"reward_model config.json names {architectures}, not a sequence-classification model"
        )
    if config.get("pad_token_id") is None:
        raise ExportError("reward_model config.json has no pad_token_id: it could not score a padded batch")


def _load_location(ref: str, rd_home: Path) -> str:
    """Where a model reference loads from (a local directory, built or converted first, or a hub id)."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    try:
        return resolve_model(ref, Path(rd_home)).location
    except ModelResolutionError as error:
        raise ExportError(f"cannot load base model {ref!r}: {error}") from None


def _copy_tokenizer(location: str, target: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(location).save_pretrained(target)


def _merge_adapter(checkpoint: Path, target: Path, asset: str, rd_home: Path) -> None:
    """Load the adapter's base model in fp32, merge the adapter into it and save plain safetensors weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    adapter = json.loads((Path(checkpoint) / ADAPTER_CONFIG).read_text())
    base_ref = adapter.get("base_model_name_or_path")
    if not base_ref:
        raise ExportError(f"{checkpoint / ADAPTER_CONFIG} names no base_model_name_or_path to merge into")
    location = _load_location(base_ref, rd_home)
    tokenizer_source = checkpoint if has_tokenizer(checkpoint) else location
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    if asset == "reward_model":
        model = AutoModelForSequenceClassification.from_pretrained(
            location, num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
