"""Where training runs and in what precision, and giving its device memory back."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Precision:
    """Where training runs, the dtype weights are loaded (and trained) in, and the autocast format."""

    use_cpu: bool
    bf16: bool
    fp16: bool
    dtype: torch.dtype

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"use_cpu": self.use_cpu, "bf16": self.bf16, "fp16": self.fp16}

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


def choose_precision(mixed_precision: str = "auto") -> Precision:
    """The training precision for a ``launch.mixed_precision`` setting.

    "auto" is bf16 autocast on a GPU that supports it, fp16 autocast on other GPUs and none on a CPU. The
    weights always load, train and are saved in float32: the optimizer needs fp32 master weights, since a
    small update (lr 1e-6) added to a bfloat16 weight rounds back to the same weight.
    """
    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "no" if not cuda else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"launch.mixed_precision must be auto, no, bf16 or fp16, got {mixed_precision!r}")
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("launch.mixed_precision 'fp16' needs a GPU; use 'no' or 'bf16' on a CPU")
    return Precision(
        use_cpu=not cuda, bf16=mixed_precision == "bf16", fp16=mixed_precision == "fp16", dtype=torch.float32
    )


def release_memory() -> None:
    """Collect garbage and return cached accelerator memory to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
