"""The known-answer task: two-number questions with one right answer, the run sizes, the benchmark files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPERATURES = (0.6, 0.8, 1.0)
"""Teacher and student sample ``n`` responses per prompt at each of these."""

STUDENT_TARGET = 0.15
"""The base student is the pre-trained model when its sampled accuracy on the probe first reaches this."""

TEACHER_TARGETS = {"weak": 0.4, "strong": 0.65}
"""Named teachers: the pre-trained model when its sampled (temperature 1) probe accuracy first reaches each."""

REWARD_SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {"rewards": [{"source": "reward_model", "weight": 1.0}]},
    "combined": {
        "rewards": [{"source": "reward_model", "weight": 1.0}, {"source": "vote_agreement", "weight": 1.0}]
    },
}
"""RL reward settings, each a set of ``rl`` config fields; the first is run first, the others reuse its
teacher samples, labels, SFT student and reward model."""

ROLES = ("teacher", "base_student", "sft_student", "rl_student")


@dataclass(frozen=True)
class Task:
    """A two-number question with one right whole-number answer."""

    name: str
    numbers: range
    template: str  # the question, with {a} and {b}
    solve: Callable[[int, int], int]
    distinct: bool  # only pairs of different numbers


TASKS = {
    "larger": Task("larger", range(10, 100), "Which is larger, {a} or {b}?", max, True),
    "smaller": Task("smaller", range(10, 100), "Which is smaller, {a} or {b}?", min, True),
    "sum": Task("sum", range(1, 50), "What is {a} + {b}?", lambda a, b: a + b, False),
}


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    task: str = "larger"

    @property
    def question(self) -> str:
        return TASKS[self.task].template.format(a=self.a, b=self.b)

    @property
    def answer(self) -> int:
        return TASKS[self.task].solve(self.a, self.b)

    @property
    def response(self) -> str:
        return f"The answer is {self.answer}."


@dataclass(frozen=True)
class Size:
    """How big one run of the experiment is (sample counts are per prompt and temperature)."""

    train_prompts: int
    eval_prompts: int
    teacher_n: int
    student_n: int
    sft_steps: int
    rm_steps: int
    rl_steps: int
    rl_eval_every: int  # RL validation cadence, in optimizer steps
    max_pretrain_steps: int


SIZES = {
    "small": Size(96, 48, 3, 10, 40, 60, 12, 3, 2500),
    "grid": Size(128, 96, 3, 10, 60, 80, 20, 4, 3000),
    "full": Size(256, 128, 3, 10, 120, 150, 40, 5, 4000),
    "large": Size(1024, 128, 3, 10, 240, 600, 40, 5, 4000),  # the reward model's trend with more prompts
}


def split_problems(task: str, size: Size, seed: int) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """Benchmark train prompts, benchmark eval prompts, and a disjoint pool for pre-training the models."""
    spec = TASKS[task]
    problems = [
        Problem(a, b, task) for a in spec.numbers for b in spec.numbers if not (spec.distinct and a == b)
    ]
    random.Random(seed).shuffle(problems)
    train = problems[: size.train_prompts]
    held = problems[size.train_prompts : size.train_prompts + size.eval_prompts]
    pool = problems[size.train_prompts + size.eval_prompts :]
    return train, held, pool


def write_benchmark(directory: Path, train: list[Problem], held: list[Problem]) -> None:
    """GSM8K's own file format: JSON Lines with a question and an answer ending in ``#### N``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, problems in (("train.jsonl", train), ("test.jsonl", held)):
        lines = [
            json.dumps({"question": p.question, "answer": f"{p.response}\n#### {p.answer}"}) for p in problems
        ]
        (directory / name).write_text("\n".join(lines) + "\n")
