"""Validation on open-ended prompts: the judge's preference of the policy's greedy response over the base
student's greedy response to the same held-out prompt, judged in both orders.

The base student's responses are decoded once, at step 0 (where the policy is the base student, so its win
rate is 0.5 by construction and the judge is not asked), saved next to the trainer state so a resumed run
compares against the same responses, and reused at every later validation. The judge is the project's pairwise judge
(``labeling.judge.judge_pairwise``): each comparison is made with either response first; a tie, or orders that
disagree, count as half a win, and soft verdict probabilities give a preference in between. Its requests go
through the judge's journal (``make_generator``), so a resumed job does not send them again.

Under several processes every process decodes, the main process alone asks the judge, and every process gets
its preferences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_pipeline.config import ModelConfig

# (key, instruction, policy response, base response) -> the policy response's preference in [0, 1], or None.
PairwiseJudge = Callable[[Sequence[tuple[str, str, str, str]]], list[float | None]]
BASE_RESPONSES_FILE = "validation-base-responses.json"


@dataclass(frozen=True)
class JudgeSettings:
    """What a training process needs to build the judge: the judge's model config (``labeling``'s judge,
    default the teacher), the RD_HOME its journal and models live in, and the judge's token allowance."""

    model: dict[str, Any]
    rd_home: str
    max_new_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "rd_home": self.rd_home, "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> JudgeSettings:
        return cls(value["model"], value["rd_home"], int(value["max_new_tokens"]))


def pairwise_judge(settings: JudgeSettings, seed: int = 0) -> PairwiseJudge:
    """The judge as a function of comparisons. Each call builds its generator (journaled under
    ``settings.rd_home``) and closes it after judging, so the judge's model is never resident alongside the
    training steps, the checkpoint saving and the adapter merge that come after a validation."""
    from rd_pipeline.generation import make_generator
    from rd_pipeline.labeling.judge import judge_pairwise

    model = ModelConfig.model_validate(settings.model)

    def judge(items: Sequence[tuple[str, str, str, str]]) -> list[float | None]:
        if not items:
            return []
        generator = make_generator(model, Path(settings.rd_home), role="judge")
        try:
            judgments, _ = judge_pairwise(
                generator, items, settings.max_new_tokens, temperature=0.0, seed=seed
            )
        finally:
            generator.close()
        return [judgment.preference for judgment in judgments]

    return judge


def _on_main_process(compute: Callable[[], Any]) -> Any:
    """``compute()`` on the main process, its result shared with every process of a distributed group."""
    import torch

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return compute()
    shared = [compute() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(shared, src=0)
    return shared[0]


class BaseComparison:
    """The policy's responses against the base student's (step 0) to the same prompts, by the judge.

    ``saved_to`` is where the base responses are kept for a resumed run (the trainer state directory)."""

    def __init__(self, judge: PairwiseJudge, saved_to: Path | None = None) -> None:
        self.judge = judge
        self.saved_to = saved_to
        self.base: dict[str, str] | None = None

    def preferences(self, step: int, keys: Sequence[str], instructions: Sequence[str], texts: Sequence[str]):
        """Each response's preference over the base student's to the same prompt (``keys`` name the prompts);
        at step 0 the responses are the base student's own: 0.5 each, and they are kept."""
        if step == 0:
            self._keep_base(dict(zip(keys, texts, strict=True)))
            return [0.5] * len(texts)
        return _on_main_process(lambda: self.judge(self._comparisons(keys, instructions, texts)))

    def _comparisons(
        self, keys: Sequence[str], instructions: Sequence[str], texts: Sequence[str]
    ) -> list[tuple[str, str, str, str]]:
        base = self._base_responses()
        return [
            (key, instruction, text, base[key])
            for key, instruction, text in zip(keys, instructions, texts, strict=True)
        ]

    def _keep_base(self, responses: dict[str, str]) -> None:
        self.base = responses
        if self.saved_to is not None and _is_main_process():
            self.saved_to.parent.mkdir(parents=True, exist_ok=True)
            staging = self.saved_to.with_suffix(".partial")
            staging.write_text(json.dumps(responses))
            staging.rename(self.saved_to)

    def _base_responses(self) -> dict[str, str]:
        if self.base is None:
            if self.saved_to is None or not self.saved_to.is_file():
                raise RuntimeError(
                    f"no base-student responses to compare with: step 0 was not validated in this run and "
                    f"{self.saved_to} does not exist"
                )
            self.base = json.loads(self.saved_to.read_text())
        return self.base


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
