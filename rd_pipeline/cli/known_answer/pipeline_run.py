"""The pipeline's config for one teacher and reward setting, and one run of it through Dagster."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from rd_pipeline.cli.known_answer.task import TEMPERATURES, Size


def pipeline_config(
    work: Path,
    run_dir: Path,
    size: Size,
    seed: int,
    teacher: str,
    rewards: dict[str, Any],
    pair_margin: str = "vote_share",
) -> dict[str, Any]:
    """The pipeline's config for one teacher and one RL reward setting (``rewards``: ``rl`` fields), with the
    reward pairs' ``labeling.pair_margin``."""
    sampling = {"temperatures": list(TEMPERATURES), "max_new_tokens": 8, "seed": seed}
    return {
        "teacher": {"ref": str(work / "models" / f"teacher_{teacher}"), "batch_size": 64},
        "student": {"ref": str(work / "models" / "student"), "batch_size": 64},
        "benchmarks": [
            {
                "name": "gsm8k",
                "source": "local",
                "path": str(work / "benchmark"),
                "train_size": size.train_prompts,
                "eval_size": size.eval_prompts,
            }
        ],
        "sampling": {"n": size.teacher_n, **sampling},
        "student_sampling": {"n": size.student_n},
        "labeling": {
            "min_vote_share": 0.5,
            "min_valid_votes": 2,
            "max_pairs_per_prompt": 8,
            "heldout_fraction": 0.25,
            "pair_margin": pair_margin,
        },
        **_training_sections(size, rewards),
        "eval": {"temperature": 0.0, "max_new_tokens": 8},
        "checks": {"enforce": False},
        "paths": {"rd_home": str(run_dir / "rd_home")},
    }


def _training_sections(size: Size, rewards: dict[str, Any]) -> dict[str, Any]:
    """The ``sft``, ``reward_model`` and ``rl`` sections: steps by size, the RL reward setting ``rewards``."""
    return {
        "sft": {
            "max_steps": size.sft_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "max_length": 96,
            "eval_every_steps": max(1, size.sft_steps // 6),
            "validation_max_new_tokens": 8,
        },
        "reward_model": {
            "max_steps": size.rm_steps,
            "learning_rate": 1e-3,
            "batch_size": 16,
            "max_length": 96,
            "eval_every_steps": max(1, size.rm_steps // 6),
        },
        "rl": {
            "algorithm": "grpo",
            "max_steps": size.rl_steps,
            "learning_rate": 2e-4,
            "batch_size": 16,
            "num_generations": 4,
            "max_completion_length": 8,
            "temperature": 1.0,
            "eval_every_steps": size.rl_eval_every,
            **copy.deepcopy(rewards),
        },
    }


def run_pipeline(config_file: Path) -> list[str]:
    """Materialize every asset through Dagster; returns the names of failed runs' steps (empty on success)."""
    from rd_pipeline.config import load_config
    from rd_pipeline.defs.resources import PipelineResource
    from rd_pipeline.defs.run import materialize_graph

    config = load_config(config_file)
    os.environ["RD_HOME"] = str(config.rd_home())
    os.environ["RD_CONFIG"] = str(config_file)
    results = materialize_graph(config, PipelineResource(config_file=str(config_file)), log_level="WARNING")
    return [
        event.step_key or ""
        for result in results
        if not result.success
        for event in result.all_events
        if event.is_step_failure
    ]
