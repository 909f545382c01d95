"""The RL reward's sources, as TRL reward functions: the reward model (standardised) and vote agreement.

TRL sums the sources with their weights (``rl.rewards``); a source that returns None for a completion (vote
agreement on a prompt without a majority answer) leaves it to the others. Each RL prompt record carries the
columns these functions read: ``benchmark``, ``prompt_id``, ``vote_answer`` (the prompt's majority answer, or
None) and ``item`` (the benchmark item as JSON, ``item_to_json``, which answer extraction needs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rd_pipeline.benchmarks import BenchmarkItem, extract_item_answer, get_benchmark
from rd_pipeline.benchmarks.base import item_from_json
from rd_pipeline.training.scoring import RewardScorer


def agrees(item: BenchmarkItem, response: str, answer: str | None) -> bool | None:
    """Whether the response's extracted final answer equals ``answer``; None when there is nothing to agree
    with (no answer, or an open-ended benchmark)."""
    benchmark = get_benchmark(item.benchmark)
    if answer is None or not benchmark.verifiable:
        return None
    extracted = extract_item_answer(item, response)
    return extracted is not None and benchmark.answers_equal(extracted, answer)


def _text(completion: Any) -> str:
    """A TRL completion's text: conversational completions are a list holding one assistant message."""
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def _conversation(prompt: Any, completion: Any) -> list[dict]:
    return list(prompt) + [{"role": "assistant", "content": _text(completion)}]


@dataclass(frozen=True)
class Standardisation:
    """Mean and standard deviation of reward-model scores on the SFT student's own responses."""

    mean: float
    std: float
    responses: int

    @classmethod
    def of(cls, scores: Sequence[float]) -> Standardisation:
        if len(scores) < 2:
            return cls(0.0, 1.0, len(scores))
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
        return cls(mean, std if std > 1e-6 else 1.0, len(scores))

    def apply(self, score: float) -> float:
        return (score - self.mean) / self.std


class RewardSource:
    """What every reward source shares: one of them (``log_lengths``) also logs each completion's length in tokens
    and whether it ended (with ``eos_token_id``) or was cut at the length limit, for the rollout record."""

    eos_token_id: int | None = None  # set on the one source that logs lengths

    def log_lengths(self, kwargs: dict[str, Any]) -> None:
        log_extra, ids = kwargs.get("log_extra"), kwargs.get("completion_ids")
        if self.eos_token_id is None or log_extra is None or ids is None:
            return
        log_extra("completion_length", [len(tokens) for tokens in ids])
        log_extra("completion_truncated", [self.eos_token_id not in tokens for tokens in ids])


class RewardModelReward(RewardSource):
    """The reward model's score of prompt + completion, standardised by its scores on reference responses (the
    SFT student's), so that a weight of 1 means one standard deviation of the SFT student's rewards."""

    __name__ = "reward_model"

    def __init__(self, location: str, reference: Sequence[list[dict]], batch_size: int = 16) -> None:
        self.scorer = RewardScorer(location)
        self.batch_size = batch_size
        self.standardisation = Standardisation.of(self.scorer.score(list(reference), batch_size))

    def raw(self, conversations: Sequence[list[dict]]) -> list[float]:
        """The reward model's scores, not standardised."""
        return self.scorer.score(list(conversations), self.batch_size)

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        self.log_lengths(kwargs)
        scores = self.raw([_conversation(p, c) for p, c in zip(prompts, completions, strict=True)])
        return [self.standardisation.apply(score) for score in scores]


class VoteAgreementReward(RewardSource):
    """1 when the completion's final answer equals the prompt's majority-vote answer, 0 when it does not, None
    when the prompt has no majority answer (open-ended or unlabelled prompts)."""

    __name__ = "vote_agreement"

    def __call__(
        self, prompts: list, completions: list, vote_answer: list, item: list, **kwargs: Any
    ) -> list[float | None]:
        self.log_lengths(kwargs)
        rewards: list[float | None] = []
        for completion, answer, item_text in zip(completions, vote_answer, item, strict=True):
            agreed = (
                None if item_text is None else agrees(item_from_json(item_text), _text(completion), answer)
            )
            rewards.append(None if agreed is None else float(agreed))
        return rewards


def reward_functions(
    sources: Sequence[Any], reward_model: str, reference: Sequence[list[dict]], eos_token_id: int | None
) -> tuple[list[RewardSource], list[float]]:
    """TRL reward functions and weights for the configured sources (``RewardSourceConfig``), in their order; the
    first logs completion lengths (see ``RewardSource``)."""
    functions: list[RewardSource] = []
    for source in sources:
        if source.source == "reward_model":
            functions.append(RewardModelReward(reward_model, reference))
        elif source.source == "vote_agreement":
            functions.append(VoteAgreementReward())
        else:
            raise ValueError(f"rl.rewards: unknown source {source.source!r}")
    if functions:
        functions[0].eos_token_id = eos_token_id
    return functions, [float(source.weight) for source in sources]
