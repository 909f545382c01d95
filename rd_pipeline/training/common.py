"""What every trainer wrapper shares: device and precision, LoRA settings, input checks, metrics, saving."""

from __future__ import annotations

import gc
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rd_pipeline.config import LoraConfig


@dataclass(frozen=True)
class Precision:
    """Where training runs and in which floating-point format."""

    use_cpu: bool
    bf16: bool
    fp16: bool
    dtype: torch.dtype

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"use_cpu": self.use_cpu, "bf16": self.bf16, "fp16": self.fp16}


def choose_precision() -> Precision:
    """float32 on the CPU without CUDA; on a GPU bfloat16 where supported, else fp16 autocast."""
    if not torch.cuda.is_available():
        return Precision(use_cpu=True, bf16=False, fp16=False, dtype=torch.float32)
    if torch.cuda.is_bf16_supported():
        return Precision(use_cpu=False, bf16=True, fp16=False, dtype=torch.bfloat16)
    return Precision(use_cpu=False, bf16=False, fp16=True, dtype=torch.float32)


def peft_lora_config(cfg: LoraConfig, task_type: str):
    """A peft ``LoraConfig`` for ``task_type`` ("CAUSAL_LM" or "SEQ_CLS"), or None when LoRA is disabled."""
    if not cfg.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type=task_type
    )


def common_trainer_args(output_dir: str, seed: int, precision: Precision) -> dict[str, Any]:
    """Arguments every TRL config shares: seeded, logged each step, no checkpoints, no external reporting."""
    return {
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **precision.trainer_kwargs(),
    }


def load_tokenizer(location: str):
    """The checkpoint's tokenizer, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(location: str, auto_class, precision: Precision, **config_overrides: Any):
    """Load ``location`` with ``auto_class`` in the training precision.

    A ``quantization_config`` of method "gguf" is dropped first: checkpoints converted from GGUF hold plain
    dequantized weights, but the leftover entry would make the trainer refuse full fine-tuning.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(location, **config_overrides)
    quantization = getattr(config, "quantization_config", None)
    if isinstance(quantization, dict) and quantization.get("quant_method") == "gguf":
        del config.quantization_config
    device_map = None if precision.use_cpu else "auto"
    return auto_class.from_pretrained(location, config=config, dtype=precision.dtype, device_map=device_map)


def check_messages(value: object, kind: str, where: str, field: str, roles: Sequence[str]) -> None:
    """Raise a ValueError naming ``where`` and ``field`` unless ``value`` is a list of such messages."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{kind} {where}: field {field!r} must be a non-empty list of messages, got {value!r:.80}"
        )
    for position, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} must be a dict with a string 'content', "
                f"got {message!r:.80}"
            )
        if message.get("role") not in roles:
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} has role {message.get('role')!r}, "
                f"expected one of {list(roles)}"
            )


def check_records(records: Sequence[dict], kind: str, fields: dict[str, Sequence[str]]) -> None:
    """Check each record's fields are message lists with allowed roles; errors name the record and field."""
    if len(records) == 0:
        raise ValueError(f"no {kind} given: training needs at least one")
    for index, record in enumerate(records):
        where = f"#{index}"
        if not isinstance(record, dict):
            raise ValueError(f"{kind} {where} must be a dict, got {type(record).__name__}")
        for field, roles in fields.items():
            if field not in record:
                raise ValueError(f"{kind} {where} has no field {field!r} (fields: {sorted(record)})")
            check_messages(record[field], kind, where, field, roles)


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def step_values(log_history: Sequence[dict], key: str) -> list[float]:
    """The finite values of ``key`` in the per-step log entries, in step order."""
    return [v for entry in log_history if "step" in entry and (v := _finite(entry.get(key))) is not None]


def loss_metrics(log_history: Sequence[dict]) -> dict[str, Any]:
    """train_loss (the mean over training, as the trainer reports it), first and final step loss, runtime."""
    summary = next((entry for entry in reversed(log_history) if "train_loss" in entry), {})
    losses = step_values(log_history, "loss")
    train_loss = _finite(summary.get("train_loss"))
    if train_loss is None and losses:
        train_loss = sum(losses) / len(losses)
    return {
        "train_loss": train_loss,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "trainer_runtime_s": _finite(summary.get("train_runtime")),
    }


@contextmanager
def scratch_dir() -> Iterator[str]:
    """A throwaway directory for the trainer's output_dir; the final checkpoint is saved elsewhere."""
    with tempfile.TemporaryDirectory(prefix="rd-train-") as path:
        yield path


def save_checkpoint(model, tokenizer, out_dir: Path) -> Path:
    """Save a plain safetensors checkpoint (LoRA merged in) and tokenizer; replace ``out_dir`` atomically."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def release_memory() -> None:
    """Collect garbage and return cached accelerator memory to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
