"""Every RL rollout on record: one JSON line per completion with its step, prompt, rewards and advantage.

The trainer keeps the last step's completions, each source's reward and the advantages (gathered over all
processes); after each optimizer step the main process appends them to ``rollouts.jsonl`` in the trainer's state
directory, which moves into the checkpoint when training ends. A run resumed after a crash drops the lines of the
steps it trains again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROLLOUTS_FILE = "rollouts.jsonl"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _text(value: Any) -> str:
    if isinstance(value, list):  # a conversation: the last message's text
        return value[-1]["content"] if value else ""
    return str(value)


def rollout_rows(
    logs: dict[str, Any],
    step: int,
    weights: dict[str, float],
    prompt_ids: dict[str, tuple[str, str]],
    limit: int | None,
) -> list[dict[str, Any]]:
    """The trainer's logged rollouts of one step as rows: benchmark, prompt id (looked up by prompt text), the
    completion, each source's reward, their weighted sum, the advantage, the length in tokens and whether the
    completion was cut at the length limit (logged by the reward sources). At most ``limit`` rows (None: all)."""
    prompts, completions, advantages = (
        list(logs["prompt"]),
        list(logs["completion"]),
        list(logs["advantages"]),
    )
    rewards = {name: list(values) for name, values in logs["rewards"].items()}
    extra = {name: list(values) for name, values in logs.get("extra", {}).items()}
    rows = []
    for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        if limit is not None and index >= limit:
            break
        benchmark, prompt_id = prompt_ids.get(_text(prompt), ("", ""))
        by_source = {name: _number(values[index]) for name, values in rewards.items()}
        known = [weights.get(name, 1.0) * value for name, value in by_source.items() if value is not None]
        lengths, truncated = extra.get("completion_length", []), extra.get("completion_truncated", [])
        rows.append(
            {
                "step": step,
                "benchmark": benchmark,
                "prompt_id": prompt_id,
                "completion": _text(completion),
                "rewards": by_source,
                "reward": sum(known) if known else None,
                "advantage": _number(advantages[index]) if index < len(advantages) else None,
                "length": lengths[index] if index < len(lengths) else None,
                "truncated": truncated[index] if index < len(truncated) else None,
            }
        )
    return rows


def keep_steps_up_to(path: Path, step: int) -> None:
    """Drop the lines of steps after ``step`` (a resumed run trains them again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def rollout_recorder(weights: dict[str, float], prompt_records: Sequence[dict[str, Any]], limit: int | None):
    """A trainer callback that appends each step's rollouts to ``ROLLOUTS_FILE`` in the trainer's output
    directory; ``.trainer`` must be set to the trainer once it is built."""
    from transformers import TrainerCallback

    prompt_ids = {
        record["prompt"][-1]["content"]: (record.get("benchmark", ""), record.get("prompt_id", ""))
        for record in prompt_records
    }

    class RolloutRecorder(TrainerCallback):
        trainer: Any = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                keep_steps_up_to(Path(args.output_dir) / ROLLOUTS_FILE, state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            logs = getattr(self.trainer, "_logs", None)
            if not state.is_world_process_zero or logs is None or limit == 0:
                return
            rows = rollout_rows(logs, state.global_step, weights, prompt_ids, limit)
            with open(Path(args.output_dir) / ROLLOUTS_FILE, "a", encoding="utf-8") as out:
                out.writelines(json.dumps(row) + "\n" for row in rows)

    return RolloutRecorder()
