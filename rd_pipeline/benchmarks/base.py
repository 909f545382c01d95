"""What every benchmark provides: normalized items, a prompt, answer extraction and scoring."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class BenchmarkItem:
    """One normalized benchmark record.

    ``gold`` is the gold final answer (a number string, an MMLU-Pro letter, ``"None"`` for GSM-Plus
    critical-thinking items) and is never used for training; ``reference`` is the AlpacaEval baseline output.
    """

    benchmark: str
    item_id: str
    split: Split
    question: str
    gold: str | None = None
    reference: str | None = None
    options: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


class Benchmark(ABC):
    """A benchmark: how to load it, prompt for it, and score answers to it."""

    name: str
    verifiable: bool
    eval_only: bool = False  # evaluation data only: no train prompts unless a config explicitly opts in

    @abstractmethod
    def load_records(self, source: str, path: str | None) -> list[BenchmarkItem]:
        """Every record of the chosen source, normalized; ``split`` set where the source has one."""

    @abstractmethod
    def user_prompt(self, item: BenchmarkItem) -> str:
        """The user message sent to a model for this item."""

    def extract_answer(self, response: str) -> str | None:
        """The final answer in a model response, or None if there is none."""
        raise NotImplementedError(f"{self.name} is open-ended: it has no extractable answer")

    def answers_equal(self, a: str, b: str) -> bool:
        """Whether two extracted answers are equivalent (by value, not as strings)."""
        raise NotImplementedError(f"{self.name} is open-ended: it has no extractable answer")

    def is_correct(self, response: str, gold: str) -> bool:
        """Whether a response's final answer matches the gold answer."""
        answer = self.extract_answer(response)
        return answer is not None and self.answers_equal(answer, gold)
