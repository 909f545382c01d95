"""Thin wrappers over TRL: supervised fine-tuning, reward-model training, RL on the reward, scoring.

Names load on first use, so importing ``rd_pipeline.training.launch`` does not import torch or TRL.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RewardScorer": "rd_pipeline.training.scoring",
    "pairwise_accuracy": "rd_pipeline.training.reward",
    "release_memory": "rd_pipeline.training.precision",
    "train_reward_model": "rd_pipeline.training.reward",
    "train_rl": "rd_pipeline.training.rl",
    "train_sft": "rd_pipeline.training.sft",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rd_pipeline.training' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
