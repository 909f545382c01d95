"""The eval judge of open-ended benchmarks: its verdicts on responses against the references, and the warning when
it is one of the models it judges."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rd_pipeline.benchmarks import BenchmarkItem
from rd_pipeline.config import ModelConfig, PipelineConfig
from rd_pipeline.generation import make_generator
from rd_pipeline.labeling.judge import PairwiseJudgment, judge_pairwise
from rd_pipeline.steps.context import StepContext
from rd_pipeline.steps.generation_guard import guarded_generation


def _same_model(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two model configs name the same model: API models by backend and served name, local ones by
    reference (a directory by its resolved path) and revision."""
    if a.backend == "openai" or b.backend == "openai":
        served = [(m.api.model if m.api else None) or m.ref for m in (a, b)]
        return a.backend == b.backend and served[0] == served[1]
    return _local_ref(a.ref) == _local_ref(b.ref) and a.revision == b.revision


def _local_ref(ref: str) -> str:
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def judge_warnings(config: PipelineConfig) -> list[str]:
    """A warning when the eval judge is one of the evaluated models (teacher, base student, or a trained SFT or
    RL checkpoint): judges tend to prefer their own outputs, so that model's win rate would be biased."""
    judge = config.eval_judge_model
    candidates = (("teacher", config.teacher), ("base student", config.student))
    roles = [role for role, model in candidates if _same_model(judge, model)]
    judge_path = Path(_local_ref(judge.ref))
    if judge.backend != "openai" and judge_path.is_absolute():
        for asset, role in (("sft_student", "SFT student"), ("rl_student", "RL student")):
            if (config.rd_home() / "models" / asset).resolve() in judge_path.parents:
                roles.append(role)
    if not roles:
        return []
    return [
        f"The eval judge ({judge.ref}) is also an evaluated model ({', '.join(roles)}): judges tend to prefer "
        "their own outputs, so the AlpacaEval win rates are biased. Set eval.judge to a model outside the "
        "comparison."
    ]


def judge_against_reference(
    ctx: StepContext, items: list[BenchmarkItem], texts_by_model: dict[str, list[str]], journal_salt: str
) -> dict[str, list[PairwiseJudgment]]:
    """Pairwise judgments of each model's response to each item against the item's reference output by the eval
    judge, made in both orders: every model's responses in one session of the judge (it loads once and judges
    them in shared batches; a response two models share is judged once). Keyed like ``texts_by_model``."""
    judge = make_generator(
        ctx.config.eval_judge_model, ctx.rd_home, role="eval judge", journal_salt=journal_salt
    )
    comparisons = [
        (f"{role}/{item.item_id}", item.question, text, item.reference or "")
        for role, texts in texts_by_model.items()
        for item, text in zip(items, texts, strict=True)
    ]
    try:
        with guarded_generation(ctx, judge, "eval_scores[judge]"):
            judgments, _ = judge_pairwise(judge, comparisons, ctx.config.labeling.judge_max_new_tokens)
    finally:
        judge.close()
    by_key = {j.key: j for j in judgments}
    return {
        role: [replace(by_key[f"{role}/{item.item_id}"], key=item.item_id) for item in items]
        for role in texts_by_model
    }
