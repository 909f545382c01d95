"""Trainer arguments that depend on the installed transformers and TRL: built without loading any model."""

from __future__ import annotations

import pytest

from rd_pipeline.config import ConfigError, RlConfig, parse_config
from rd_pipeline.training.rl import vllm_generation_args
from rd_pipeline.training.trainer_args import checkpointing_args


def test_checkpointing_uses_the_name_the_installed_transformers_knows() -> None:
    newer = {"activation_checkpointing", "activation_checkpointing_kwargs", "gradient_checkpointing"}
    older = {"gradient_checkpointing", "gradient_checkpointing_kwargs"}
    assert checkpointing_args(True, newer) == {
        "activation_checkpointing": True,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
    }
    assert checkpointing_args(True, older) == {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    assert checkpointing_args(False, older) == {"gradient_checkpointing": False}


def test_checkpointing_args_are_accepted_by_the_installed_training_arguments() -> None:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **checkpointing_args(True))
    enabled = getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None)
    assert enabled is True


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_rl_generation_with_vllm_reaches_the_trl_config(algorithm: str) -> None:
    from trl import GRPOConfig, RLOOConfig

    config_class = GRPOConfig if algorithm == "grpo" else RLOOConfig
    cfg = RlConfig(
        algorithm=algorithm,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url="http://gpu-box:8001",
    )
    args = config_class(output_dir="unused", use_cpu=True, report_to="none", **vllm_generation_args(cfg))
    assert args.use_vllm is True
    assert args.vllm_mode == "server"
    assert args.vllm_server_base_url == "http://gpu-box:8001"
    assert vllm_generation_args(RlConfig(algorithm=algorithm)) == {"use_vllm": False}


def test_vllm_colocate_settings_reach_the_trl_config() -> None:
    from trl import GRPOConfig

    cfg = RlConfig(use_vllm=True, vllm_gpu_memory_utilization=0.25, vllm_tensor_parallel_size=2)
    args = GRPOConfig(output_dir="unused", use_cpu=True, report_to="none", **vllm_generation_args(cfg))
    assert (args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_tensor_parallel_size) == (
        "colocate",
        0.25,
        2,
    )


def test_vllm_server_mode_needs_its_address_at_load_time() -> None:
    base = {"teacher": {"ref": "tiny-random"}, "student": {"ref": "tiny-random"}}
    with pytest.raises(ConfigError, match="rl.*vllm_server_base_url"):
        parse_config({**base, "rl": {"use_vllm": True, "vllm_mode": "server"}}, source="cfg.yaml")
