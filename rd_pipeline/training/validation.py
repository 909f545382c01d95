"""Validation of a student during SFT or RL: it decodes held-out training prompts greedily, and is measured
against their pseudo-labels (agreement with the majority vote), on open-ended prompts in SFT by the judge's
preference over the base student's response (``base_comparison``), and in RL also the reward model and its KL to
the SFT student, with its answers' length.

Validation prompts are training prompts held out of the stage. Their gold answers, where a benchmark has them,
are measured as a monitor only: selection uses agreement with the vote label and the judge's preference, which
need no gold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rd_pipeline.benchmarks import BenchmarkItem, get_benchmark, is_item_correct
from rd_pipeline.benchmarks.base import item_from_json
from rd_pipeline.training.base_comparison import BaseComparison
from rd_pipeline.training.rl_rewards import agrees

KlSince = Callable[[], float | None]  # mean training KL since the previous validation, or None


@dataclass(frozen=True)
class ValidationPrompt:
    """One held-out prompt: its messages, benchmark item and majority-vote answer (None: unlabelled)."""

    messages: list[dict]
    item: BenchmarkItem
    vote_answer: str | None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ValidationPrompt:
        return cls(record["prompt"], item_from_json(record["item"]), record.get("vote_answer"))

    @property
    def key(self) -> str:
        return f"{self.item.benchmark}/{self.item.item_id}"

    @property
    def open_ended(self) -> bool:
        return not get_benchmark(self.item.benchmark).verifiable


def _has_gold(item: BenchmarkItem) -> bool:
    return item.gold is not None and get_benchmark(item.benchmark).verifiable


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(flags: Sequence[bool | None]) -> tuple[float | None, int]:
    known = [flag for flag in flags if flag is not None]
    return (sum(known) / len(known) if known else None), len(known)


def greedy_completions(
    model, tokenizer, prompts: Sequence[list[dict]], max_new_tokens: int, batch_size: int = 32
):
    """Greedy completions of conversational prompts: (texts, token counts without the end token)."""
    was_training = model.training
    model.eval()
    texts: list[str] = []
    lengths: list[int] = []
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            rendered = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + batch_size]
            ]
            inputs = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            with torch.no_grad():
                out = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            generated = out[:, inputs["input_ids"].shape[1] :]
            for row in generated.tolist():
                ended = [
                    i
                    for i, token in enumerate(row)
                    if token in (tokenizer.eos_token_id, tokenizer.pad_token_id)
                ]
                lengths.append(ended[0] if ended else len(row))
            texts += tokenizer.batch_decode(generated, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return texts, lengths


def selection_metric(labelled: bool, judged: bool, rewarded: bool) -> str | None:
    """What selects the shipped step: ``combined_score`` (the mean over prompts of per-prompt scores:
    agreement 1/0 on labelled verifiable prompts, the judge's preference 1/0.5/0 against the base student on
    open-ended ones) when both kinds are measured, else ``agreement`` or ``win_rate`` alone, else the mean
    reward-model score; None when nothing is measured (nothing selects). A prompt weighs the same whichever
    kind it is, so the mix of held-out prompts sets the weight of each kind."""
    if labelled and judged:
        return "combined_score"
    if labelled:
        return "agreement"
    if judged:
        return "win_rate"
    return "mean_reward" if rewarded else None


class PolicyValidator:
    """Measures the policy on the validation prompts; its score (what selection maximises) is named by
    ``selection_metric``: agreement with the vote labels over every labelled verifiable prompt, with
    ``base_comparison`` the judge's preference over the base student's response on open-ended prompts (win rate;
    both kinds: the mean of per-prompt scores), or the mean reward-model score. Without ``kl_since`` the KL is
    not measured."""

    def __init__(
        self,
        prompts: Sequence[ValidationPrompt],
        tokenizer,
        max_new_tokens: int,
        reward_model: Callable[[Sequence[list[dict]]], list[float]] | None = None,
        kl_since: KlSince | None = None,
        base_comparison: BaseComparison | None = None,
    ) -> None:
        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.reward_model = reward_model
        self.kl_since = kl_since
        self.base_comparison = base_comparison
        self.judged = [p for p in self.prompts if p.open_ended] if base_comparison is not None else []
        labelled = any(p.vote_answer is not None for p in self.prompts)
        self.selection_metric = selection_metric(labelled, bool(self.judged), reward_model is not None)

    def __call__(self, step: int, model) -> tuple[float | None, dict[str, Any]]:
        texts, lengths = greedy_completions(
            model, self.tokenizer, [p.messages for p in self.prompts], self.max_new_tokens
        )
        rewards: list[float | None] = [None] * len(texts)
        if self.reward_model is not None:
            rewards = self.reward_model(
                [
                    p.messages + [{"role": "assistant", "content": t}]
                    for p, t in zip(self.prompts, texts, strict=True)
                ]
            )
        preferences = self._preferences(step, texts)
        rows = [
            {
                "benchmark": p.item.benchmark,
                "agrees": agrees(p.item, text, p.vote_answer),
                "correct": is_item_correct(p.item, text) if _has_gold(p.item) else None,
                "reward": reward,
                "length": length,
                "preference": preferences.get(p.key),
            }
            for p, text, reward, length in zip(self.prompts, texts, rewards, lengths, strict=True)
        ]
        kl = None if self.kl_since is None else self.kl_since() if step > 0 else 0.0
        values = {**_measures(rows), **_combined_score(rows), "kl": kl, "benchmarks": {}}
        by_benchmark: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_benchmark[row["benchmark"]].append(row)
        values["benchmarks"] = {name: _measures(group) for name, group in sorted(by_benchmark.items())}
        return (values[self.selection_metric] if self.selection_metric else None), values

    def _preferences(self, step: int, texts: Sequence[str]) -> dict[str, float | None]:
        """The judge's preference of each open-ended prompt's response over the base student's, by prompt key."""
        if self.base_comparison is None or not self.judged:
            return {}
        by_key = {p.key: text for p, text in zip(self.prompts, texts, strict=True)}
        keys = [p.key for p in self.judged]
        preferences = self.base_comparison.preferences(
            step, keys, [p.item.question for p in self.judged], [by_key[key] for key in keys]
        )
        return dict(zip(keys, preferences, strict=True))


def _combined_score(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean over prompts of per-prompt scores: agreement 1/0 where a vote label exists, the judge's
    preference (1 win, 0.5 tie or orders that disagree, 0 loss; soft in between) where judged."""
    scores = [float(row["agrees"]) for row in rows if row["agrees"] is not None]
    scores += [row["preference"] for row in rows if row["preference"] is not None]
    return {"combined_score": _mean(scores), "combined_n": len(scores)}


def _measures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    agreement, labelled = _share([row["agrees"] for row in rows])
    gold_accuracy, with_gold = _share([row["correct"] for row in rows])
    judged = [row["preference"] for row in rows if row["preference"] is not None]
    return {
        "agreement": agreement,
        "agreement_n": labelled,
        "win_rate": _mean(judged),
        "win_n": len(judged),
        "gold_accuracy": gold_accuracy,
        "gold_n": with_gold,
        "mean_reward": _mean([row["reward"] for row in rows if row["reward"] is not None]),
        "mean_length": _mean([float(row["length"]) for row in rows]),
        "prompts": len(rows),
    }
