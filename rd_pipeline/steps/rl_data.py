"""What rl_student trains on besides its prompts (see ``steps.validation`` for the prompts and their split): the
SFT student's responses that standardise the reward model's scores, and the ``rl_rollouts`` record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks.records import unit_hash
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.prompts import read_prompts
from rd_pipeline.training.rl_rollouts import ROLLOUTS_FILE  # torch-free: the trainer loads only in its job


def reference_responses(ctx: StepContext) -> list[list[dict[str, str]]]:
    """A stable sample of the SFT student's own responses to training prompts (``rl.reward_reference_responses``
    of them), as conversations."""
    conversations: list[tuple[float, list[dict[str, str]]]] = []
    for benchmark in ctx.config.benchmark_names:
        prompts = {row["prompt_id"]: row["prompt"] for row in read_prompts(ctx, benchmark, "train")}
        for row in ctx.store.read("student_responses", benchmark):
            if row["prompt_id"] in prompts:
                key = unit_hash(
                    benchmark, row["prompt_id"], str(row["temperature"]), str(row["sample_index"])
                )
                conversation = [
                    {"role": "user", "content": prompts[row["prompt_id"]]},
                    {"role": "assistant", "content": row["response"]},
                ]
                conversations.append((key, conversation))
    conversations.sort(key=lambda pair: pair[0])
    return [conversation for _, conversation in conversations[: ctx.config.rl.reward_reference_responses]]


def rollout_table_rows(version: str, checkpoint: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``rl_rollouts`` rows of a trained RL student (from its checkpoint's ``rollouts.jsonl``), by benchmark."""
    path = Path(checkpoint) / ROLLOUTS_FILE
    rows: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        rollout = json.loads(line)
        rows.setdefault(rollout["benchmark"], []).append(
            {
                "benchmark": rollout["benchmark"],
                "rl_version": version,
                "step": rollout["step"],
                "prompt_id": rollout["prompt_id"],
                "completion": rollout["completion"],
                "reward_model": rollout["rewards"].get("reward_model"),
                "vote_agreement": rollout["rewards"].get("vote_agreement"),
                "reward": rollout["reward"],
                "advantage": rollout["advantage"],
                "length": rollout["length"],
                "truncated": rollout["truncated"],
            }
        )
    return rows
