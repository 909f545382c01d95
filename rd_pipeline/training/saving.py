"""Saving the trained checkpoint: through the trainer, or from the trainer state saved after the last step,
with LoRA adapters merged into the base model."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rd_pipeline.training.loading import load_model, whole_model_loading
from rd_pipeline.training.precision import Precision
from rd_pipeline.training.selection import SELECTION_STATE_FILE

# What a trainer state's checkpoint holds of the model itself: what ``trainer.save_model`` wrote into it.
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json")


@dataclass(frozen=True)
class BaseModelRef:
    """The checkpoint training started from: where, which revision, which auto class and config overrides."""

    location: str
    revision: str | None
    auto_class: Any
    config_overrides: dict[str, Any]


def save_from_state(checkpoint: Path, accelerator, tokenizer, base: BaseModelRef, out_dir: Path, lora: bool):
    """Save the checkpoint from trainer state saved after the last step, as ``save_trained`` would from the
    trainer: its weights (``trainer.save_model``'s files) or its LoRA adapter merged into the base model, and
    the tokenizer. Every process calls this; the main process writes."""
    out_dir = Path(out_dir)
    if accelerator.is_main_process:
        if lora:
            _merge_adapter(Path(checkpoint), base, tokenizer, out_dir)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            for pattern in MODEL_FILE_PATTERNS:
                for file in Path(checkpoint).glob(pattern):
                    shutil.copy2(file, out_dir / file.name)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def save_trained(trainer, tokenizer, base: BaseModelRef, out_dir: Path, lora: bool) -> Path:
    """Save the trained model as a plain safetensors checkpoint with its tokenizer in ``out_dir``.

    Every process calls this: ``trainer.save_model`` gathers sharded weights (FSDP, ZeRO-3) and writes on the
    main process only. LoRA adapters are saved the same way, then merged into a fresh copy of the base model
    on the main process, so the checkpoint never holds adapter weights.
    """
    out_dir = Path(out_dir)
    accelerator = trainer.accelerator
    target = out_dir.with_name(out_dir.name + ".adapter") if lora else out_dir
    trainer.save_model(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if lora:
            _merge_adapter(target, base, tokenizer, out_dir)
            shutil.rmtree(target)
        (out_dir / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def _merge_adapter(adapter_dir: Path, base: BaseModelRef, tokenizer, out_dir: Path) -> None:
    from peft import PeftModel

    full_precision = Precision(use_cpu=True, bf16=False, fp16=False, dtype=torch.float32)
    with whole_model_loading():
        model = load_model(
            base.location, base.auto_class, full_precision, base.revision, **base.config_overrides
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)


def selection_saved_with(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint selection saved with a trainer state (see ``training.selection``), if any."""
    path = Path(checkpoint) / SELECTION_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
