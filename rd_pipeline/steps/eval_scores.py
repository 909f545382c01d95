"""eval_scores: teacher, base student, SFT student and RL student on each benchmark's eval subset, under an
evaluation key that decides when stored scores are kept (scoring itself: ``steps/eval_scoring.py``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import get_benchmark
from rd_pipeline.config import MODEL_ROLES, PipelineConfig
from rd_pipeline.evaluation.drift import ScoreDrift, compare_scores
from rd_pipeline.evaluation.key import EvalKey, KeyedModel, build_eval_key, generation_salt, output_identity
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.labeling.judge import JUDGE_VERSION
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.check_registry import AssetCheck, CheckDetails
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.eval_judge import judge_warnings
from rd_pipeline.steps.eval_scoring import (
    EvaluatedModel,
    ScoredModels,
    add_reward_scores,
    judge_models,
    score_model,
)
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.steps.results import EvalScores
from rd_pipeline.steps.teacher import generate_rows, teacher_version


def evaluated_models(ctx: StepContext) -> list[EvaluatedModel]:
    """The four models every benchmark is evaluated on."""
    config = ctx.config
    sft_path, sft = latest_checkpoint(ctx, "sft_student")
    rl_path, rl = latest_checkpoint(ctx, "rl_student")
    base = resolve_model(config.student.ref, ctx.rd_home, config.student.revision)
    return [
        EvaluatedModel("teacher", config.teacher, None, teacher_version(config)),
        EvaluatedModel("base_student", config.student, None, base.fingerprint),
        EvaluatedModel("sft_student", config.student, str(sft_path), sft["data_version"]),
        EvaluatedModel("rl_student", config.student, str(rl_path), rl["data_version"]),
    ]


def _eval_complete(result: EvalScores, _: PipelineConfig) -> CheckDetails:
    missing = [role for role in MODEL_ROLES if role not in result.scored_roles()]
    return not missing and result.eval_prompts > 0, {"missing_roles": ", ".join(missing) or "none"}


def _eval_drift(result: EvalScores, _: PipelineConfig) -> CheckDetails:
    """After a forced re-evaluation, every new score lies within the 95% interval of the one stored under the
    same evaluation key."""
    if not result.refreshed:
        return True, {"status": "not re-evaluated"}
    if result.drift is None:
        return True, {"status": f"re-evaluated; no scores were stored under key {result.eval_key} to compare"}
    drifted = [f"{d['model_role']} {d['metric']}" for d in result.drift if d["drifted"]]
    status = f"{len(drifted)} of {len(result.drift)} scores outside the stored 95% interval"
    return not drifted, {
        "status": status,
        "drifted": ", ".join(drifted) or "none",
        "scores": {
            f"{d['model_role']} {d['metric']}": {
                "old": d["old"],
                "new": d["new"],
                "interval": [d["ci_low"], d["ci_high"]],
                "drifted": d["drifted"],
            }
            for d in result.drift
        },
    }


EVAL_SCORES_CHECKS = (
    AssetCheck("complete", False, "every model was scored", _eval_complete),
    AssetCheck(
        "eval_drift",
        False,
        "a forced re-evaluation (rd materialize --refresh) scored every model within the 95% interval of the "
        "scores stored under the same evaluation key",
        _eval_drift,
    ),
)


@committed("eval_scores", checks=EVAL_SCORES_CHECKS)
def make_eval_scores(ctx: StepContext, benchmark: str) -> StepResult:
    """Generate each model's answers to the eval prompts, score them, and score them with the reward model; or,
    under an unchanged evaluation key and without ``ctx.refresh``, keep the stored scores."""
    prompts = read_prompts(ctx, benchmark, "eval")
    models = evaluated_models(ctx)
    rm_path, rm = latest_checkpoint(ctx, "reward_model")
    rl = ctx.upstream_version("rl_student")
    key = _eval_key(ctx, benchmark, prompts, models, rm_path)
    stored = ctx.store.read("eval_scores", benchmark)
    same_key = bool(stored) and all(row.get("eval_key") == key.hash for row in stored)
    if same_key and not ctx.refresh:
        reused = _reuse_stored_scores(ctx, benchmark, key, len(prompts))
        if reused is not None:
            return reused
    refresh = _refresh_number(ctx, benchmark, key) if ctx.refresh else 0
    generated = _generate_eval_responses(ctx, benchmark, prompts, models, key, refresh)
    scored = ScoredModels(judge_salt=generation_salt(key, ctx.config.eval_judge_model, refresh))
    items = [row_to_item(row) for row in prompts]
    judge_models(
        ctx, benchmark, items, {model.role: generated.responses[model.role] for model in models}, scored
    )
    for model in models:
        score_model(ctx, benchmark, items, model, generated.responses[model.role], scored)
    add_reward_scores(rm_path, prompts, scored.response_rows)
    for row in scored.scores:
        row |= {"eval_key": key.hash, "eval_key_parts": key.parts_json()}
    ctx.stage("eval_responses", benchmark, scored.response_rows)
    ctx.stage("eval_scores", benchmark, scored.scores)
    ctx.stage("eval_breakdown", benchmark, scored.breakdown_rows)
    data_version = content_hash(scored.scores)
    lineage = StepLineage.of(
        rl["teacher_version"],
        {"rl_student": rl, "sft_student": ctx.upstream_version("sft_student"), "reward_model": rm},
        eval_key=key.hash,
        refresh=refresh,
    )
    lineage.record(ctx, "eval_scores", benchmark, data_version)
    drift = compare_scores(stored, scored.scores) if ctx.refresh and same_key else None
    output = _eval_output(ctx, benchmark, len(prompts), len(models), generated, scored, key, drift)
    return StepResult.of(data_version, output)


def _eval_key(
    ctx: StepContext,
    benchmark: str,
    prompts: list[dict[str, Any]],
    models: list[EvaluatedModel],
    rm_path: Path,
) -> EvalKey:
    """The evaluation key of this partition (see ``rd_pipeline.evaluation.key``); the judge is part of it on
    open-ended benchmarks only."""
    judged = not get_benchmark(benchmark).verifiable
    return build_eval_key(
        ctx.config,
        benchmark,
        [KeyedModel(m.role, m.model, m.location) for m in models],
        rm_path,
        prompts,
        JUDGE_VERSION if judged else None,
    )


def _refresh_number(ctx: StepContext, benchmark: str, key: EvalKey) -> int:
    """The number of this forced re-evaluation of ``key``: one more than the last one committed, so that a
    refresh that crashed resumes from what it journaled and a finished one is not replayed by the next."""
    records = ctx.store.read("asset_versions", benchmark, asset="eval_scores")
    upstream = [json.loads(record["upstream"] or "{}") for record in records]
    return 1 + max((u.get("refresh", 0) for u in upstream if u.get("eval_key") == key.hash), default=0)


def _reuse_stored_scores(ctx: StepContext, benchmark: str, key: EvalKey, n_prompts: int) -> StepResult | None:
    """The stored scores, recorded again as this run's version, when they were made under the same key."""
    previous = ctx.store.latest_version("eval_scores", benchmark)
    if previous is None:
        return None
    stored = ctx.store.read("eval_scores", benchmark)
    ctx.log(f"eval_scores[{benchmark}]: evaluation key {key.short} unchanged; keeping the stored scores")
    ctx.record_version(
        "eval_scores",
        benchmark,
        previous["data_version"],
        previous["teacher_version"],
        json.loads(previous["upstream"]),
    )
    return StepResult.of(
        previous["data_version"],
        EvalScores(
            eval_prompts=n_prompts,
            samples_generated=0,
            reused=True,
            eval_key=key.hash,
            scores=_score_metadata(stored),
            details={"eval_key_parts": key.part_hashes()},
        ),
    )


@dataclass(frozen=True, kw_only=True)
class _EvalGeneration:
    """Every model's response texts (by role, in prompt order), how many were generated and how long it took."""

    responses: dict[str, list[str]]
    samples_generated: int
    seconds: float


def _generate_eval_responses(
    ctx: StepContext,
    benchmark: str,
    prompts: list[dict[str, Any]],
    models: list[EvaluatedModel],
    key: EvalKey,
    refresh: int,
) -> _EvalGeneration:
    """One response per eval prompt from each model, at the eval temperature; journaled under ``key``'s salt for
    each model (see ``generation_salt``)."""
    config = ctx.config
    params = SamplingParams(
        temperature=config.eval.temperature,
        n=1,
        max_new_tokens=config.eval.max_new_tokens,
        seed=config.sampling.seed,
    )
    requests = [
        GenerationRequest(row["prompt_id"], ({"role": "user", "content": row["prompt"]},), params)
        for row in prompts
    ]
    started = time.monotonic()
    responses: dict[str, list[str]] = {}
    first_role: dict[str, str] = {}  # output identity -> the role generated for it
    generated = 0
    for model in models:
        identity = output_identity(key, KeyedModel(model.role, model.model, model.location))
        if identity is not None and identity in first_role:
            ctx.log(
                f"eval_scores[{benchmark}] {model.role}: same checkpoint and settings as the "
                f"{first_role[identity]}; its responses are reused"
            )
            responses[model.role] = responses[first_role[identity]]
            continue
        completions, stats, _ = generate_rows(
            ctx,
            model.model,
            requests,
            f"eval_scores[{benchmark}] {model.role}",
            location=model.location,
            journal_salt=generation_salt(key, model.model, refresh),
        )
        responses[model.role] = [c.text for c in completions]
        if identity is not None:
            first_role[identity] = model.role
        generated += stats.samples_generated
    return _EvalGeneration(
        responses=responses, samples_generated=generated, seconds=time.monotonic() - started
    )


def _eval_output(
    ctx: StepContext,
    benchmark: str,
    n_prompts: int,
    n_models: int,
    generated: _EvalGeneration,
    scored: ScoredModels,
    key: EvalKey,
    drift: list[ScoreDrift] | None,
) -> EvalScores:
    """What eval_scores reports; warns in the log when the eval judge is one of the evaluated models, or when a
    forced re-evaluation moved a score outside its stored interval."""
    config = ctx.config
    per_s = round(n_prompts * n_models / generated.seconds, 3) if generated.samples_generated else None
    # NaN rates (nothing parsed) left out
    details: dict[str, Any] = {k: v for k, v in scored.judge_metadata.items() if v == v}
    if not get_benchmark(benchmark).verifiable:
        details["eval_judge"] = config.eval_judge_model.ref
        for warning in judge_warnings(config):
            ctx.log(f"eval_scores[{benchmark}]: {warning}")
    for moved in [d for d in drift or [] if d.drifted]:
        ctx.log(
            f"WARNING eval_scores[{benchmark}]: {moved.label} is {moved.new} on re-evaluation, outside the 95% "
            f"interval [{moved.ci_low}, {moved.ci_high}] of the {moved.old} stored under key {key.short}"
        )
    return EvalScores(
        eval_prompts=n_prompts,
        samples_generated=generated.samples_generated,
        reused=False,
        eval_key=key.hash,
        refreshed=ctx.refresh,
        drift=[d.to_json() for d in drift] if drift is not None else None,
        scores=_score_metadata(scored.scores),
        details={"eval_prompts_per_s": per_s, "eval_key_parts": key.part_hashes(), **details},
    )


def _score_metadata(scores: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{row['model_role']}_{row['metric']}": round(row["value"], 4) for row in scores}
