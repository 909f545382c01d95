"""How eval_scores scores each evaluated model's responses: accuracy (and its breakdown) on verifiable benchmarks,
win rates against the references by the eval judge on open-ended ones, and the reward model's score of every
response; the rows it stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import BenchmarkItem, get_benchmark, is_item_correct
from rd_pipeline.config import ModelConfig
from rd_pipeline.evaluation import accuracy, breakdown, length_controlled_win_rate, win_rate
from rd_pipeline.evaluation.metrics import Estimate
from rd_pipeline.labeling.judge import PairwiseJudgment, judge_summary
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.eval_judge import judge_against_reference


@dataclass(frozen=True)
class EvaluatedModel:
    role: str
    model: ModelConfig
    location: str | None
    version: str


def _score_row(benchmark: str, model: EvaluatedModel, metric: str, estimate: Estimate) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "model_role": model.role,
        "model_version": model.version,
        "metric": metric,
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "n": estimate.n,
    }


@dataclass
class ScoredModels:
    """The rows eval_scores stages, filled model by model, and the eval judge's verdict statistics; the judge's
    requests are journaled under ``judge_salt``."""

    judge_salt: str = ""
    judgments: dict[str, list[PairwiseJudgment]] = field(default_factory=dict)  # by model role (open-ended)
    scores: list[dict[str, Any]] = field(default_factory=list)
    breakdown_rows: list[dict[str, Any]] = field(default_factory=list)
    response_rows: list[dict[str, Any]] = field(default_factory=list)
    judge_metadata: dict[str, Any] = field(default_factory=dict)


def judge_models(
    ctx: StepContext,
    benchmark: str,
    items: list[BenchmarkItem],
    responses: dict[str, list[str]],
    scored: ScoredModels,
) -> None:
    """On an open-ended benchmark, every model's responses judged against the references at once (one judge
    session for all models), for ``score_model`` to use."""
    if not get_benchmark(benchmark).verifiable:
        scored.judgments = judge_against_reference(ctx, items, responses, scored.judge_salt)


def score_model(
    ctx: StepContext,
    benchmark: str,
    items: list[BenchmarkItem],
    model: EvaluatedModel,
    texts: list[str],
    scored: ScoredModels,
) -> None:
    """Score one model's responses (accuracy, or win rates against the references) and add its rows."""
    correct: list[bool | None] = [None] * len(texts)
    preferences: list[float | None] = [None] * len(texts)
    if get_benchmark(benchmark).verifiable:
        correct = [is_item_correct(item, text) for item, text in zip(items, texts, strict=True)]
        _add_accuracy(benchmark, items, model, correct, scored)
    else:
        preferences = _add_win_rates(ctx, benchmark, items, model, texts, scored)
    for item, text, ok, pref in zip(items, texts, correct, preferences, strict=True):
        scored.response_rows.append(
            _response_row(
                benchmark, model, prompt_id=item.item_id, response=text, correct=ok, preference=pref
            )
        )


def _add_accuracy(
    benchmark: str,
    items: list[BenchmarkItem],
    model: EvaluatedModel,
    correct: list[bool | None],
    scored: ScoredModels,
) -> None:
    """Accuracy, and accuracy by the benchmark's breakdown field if it declares one."""
    scored.scores.append(_score_row(benchmark, model, "accuracy", accuracy(correct)))
    group_field = get_benchmark(benchmark).breakdown_field
    if not group_field:
        return
    groups = [item.meta.get(group_field, "unknown") for item in items]
    for group, estimate in breakdown(correct, groups).items():
        scored.breakdown_rows.append(
            {
                "benchmark": benchmark,
                "model_role": model.role,
                "group_kind": group_field,
                "group": group,
                "value": estimate.value,
                "n": estimate.n,
            }
        )


def _add_win_rates(
    ctx: StepContext,
    benchmark: str,
    items: list[BenchmarkItem],
    model: EvaluatedModel,
    texts: list[str],
    scored: ScoredModels,
) -> list[float | None]:
    """Win rate and length-controlled win rate against the references (judged with every model's responses by
    ``judge_models`` first, else on their own); returns each response's preference."""
    judgments = scored.judgments.get(model.role)
    if judgments is None:
        judgments = judge_against_reference(ctx, items, {model.role: texts}, scored.judge_salt)[model.role]
    preferences = [j.preference for j in judgments]
    scored.judge_metadata.update(
        {f"{model.role}_judge_{k}": round(v, 4) for k, v in judge_summary(pairwise=judgments).items()}
    )
    scored.scores.append(_score_row(benchmark, model, "win_rate", win_rate(preferences)))
    lc = length_controlled_win_rate(
        preferences,
        [len(t) for t in texts],
        [len(item.reference or "") for item in items],
        [item.item_id for item in items],
    )
    scored.scores.append(_score_row(benchmark, model, "lc_win_rate", lc))
    return preferences


def _response_row(
    benchmark: str,
    model: EvaluatedModel,
    *,
    prompt_id: str,
    response: str,
    correct: bool | None,
    preference: float | None,
) -> dict[str, Any]:
    """One eval_responses row; its reward score is filled in once every model is scored."""
    return {
        "benchmark": benchmark,
        "model_role": model.role,
        "model_version": model.version,
        "prompt_id": prompt_id,
        "response": response,
        "correct": correct,
        "preference": preference,
        "reward_score": None,
    }


def add_reward_scores(
    rm_path: Path, prompts: list[dict[str, Any]], response_rows: list[dict[str, Any]]
) -> None:
    """Fill in each eval response's reward-model score."""
    from rd_pipeline.training.scoring import RewardScorer

    prompt_text = {row["prompt_id"]: row["prompt"] for row in prompts}
    scorer = RewardScorer(str(rm_path))
    try:
        rewards = scorer.score(
            [
                [
                    {"role": "user", "content": prompt_text[row["prompt_id"]]},
                    {"role": "assistant", "content": row["response"]},
                ]
                for row in response_rows
            ]
        )
    finally:
        scorer.close()
    for row, reward in zip(response_rows, rewards, strict=True):
        row["reward_score"] = reward
