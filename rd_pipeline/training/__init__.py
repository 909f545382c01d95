"""Thin wrappers over TRL: supervised fine-tuning, reward-model training, RL on the reward, scoring."""

from rd_pipeline.training.common import release_memory
from rd_pipeline.training.reward import pairwise_accuracy, train_reward_model
from rd_pipeline.training.rl import train_rl
from rd_pipeline.training.scoring import RewardScorer
from rd_pipeline.training.sft import train_sft

__all__ = [
    "RewardScorer",
    "pairwise_accuracy",
    "release_memory",
    "train_reward_model",
    "train_rl",
    "train_sft",
]
