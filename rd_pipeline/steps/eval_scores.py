"""eval_scores and report: teacher, base student, SFT student and RL student on each benchmark's eval subset."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import BenchmarkItem, get_benchmark, is_item_correct
from rd_pipeline.config import MODEL_ROLES, ModelConfig, PipelineConfig
from rd_pipeline.evaluation import accuracy, breakdown, length_controlled_win_rate, render_report, win_rate
from rd_pipeline.evaluation.drift import ScoreDrift, compare_scores
from rd_pipeline.evaluation.judge_audit import AuditThresholds, audit_findings
from rd_pipeline.evaluation.key import EvalKey, KeyedModel, build_eval_key, generation_salt
from rd_pipeline.evaluation.metrics import Estimate
from rd_pipeline.generation import make_generator
from rd_pipeline.generation.base import GenerationRequest, SamplingParams
from rd_pipeline.labeling.judge import JUDGE_VERSION, PairwiseJudgment, judge_pairwise, judge_summary
from rd_pipeline.models import resolve_model
from rd_pipeline.steps.check_registry import AssetCheck, CheckDetails
from rd_pipeline.steps.checkpoints import latest_checkpoint
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepLineage, StepResult, content_hash
from rd_pipeline.steps.generation_guard import guarded_generation
from rd_pipeline.steps.prompts import read_prompts, row_to_item
from rd_pipeline.steps.results import EvalScores
from rd_pipeline.steps.teacher import generate_rows, teacher_version


@dataclass(frozen=True)
class EvaluatedModel:
    role: str
    model: ModelConfig
    location: str | None
    version: str


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
    scored = _ScoredModels(judge_salt=generation_salt(key, ctx.config.eval_judge_model, refresh))
    items = [row_to_item(row) for row in prompts]
    for model in models:
        _score_model(ctx, benchmark, items, model, generated.responses[model.role], scored)
    _add_reward_scores(rm_path, prompts, scored.response_rows)
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
    generated = 0
    for model in models:
        completions, stats, _ = generate_rows(
            ctx,
            model.model,
            requests,
            f"eval_scores[{benchmark}] {model.role}",
            location=model.location,
            journal_salt=generation_salt(key, model.model, refresh),
        )
        responses[model.role] = [c.text for c in completions]
        generated += stats.samples_generated
    return _EvalGeneration(
        responses=responses, samples_generated=generated, seconds=time.monotonic() - started
    )


@dataclass
class _ScoredModels:
    """The rows eval_scores stages, filled model by model, and the eval judge's verdict statistics; the judge's
    requests are journaled under ``judge_salt``."""

    judge_salt: str = ""
    scores: list[dict[str, Any]] = field(default_factory=list)
    breakdown_rows: list[dict[str, Any]] = field(default_factory=list)
    response_rows: list[dict[str, Any]] = field(default_factory=list)
    judge_metadata: dict[str, Any] = field(default_factory=dict)


def _score_model(
    ctx: StepContext,
    benchmark: str,
    items: list[BenchmarkItem],
    model: EvaluatedModel,
    texts: list[str],
    scored: _ScoredModels,
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
    scored: _ScoredModels,
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
    scored: _ScoredModels,
) -> list[float | None]:
    """Win rate and length-controlled win rate against the references; returns each response's preference."""
    judgments = _judge_against_reference(ctx, items, texts, scored.judge_salt)
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


def _add_reward_scores(
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


def _eval_output(
    ctx: StepContext,
    benchmark: str,
    n_prompts: int,
    n_models: int,
    generated: _EvalGeneration,
    scored: _ScoredModels,
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


def _score_metadata(scores: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{row['model_role']}_{row['metric']}": round(row["value"], 4) for row in scores}


def _judge_against_reference(
    ctx: StepContext, items: list[BenchmarkItem], texts: list[str], journal_salt: str
) -> list[PairwiseJudgment]:
    """Pairwise judgments of each response against the item's reference output by the eval judge, made in both
    orders."""
    judge = make_generator(
        ctx.config.eval_judge_model, ctx.rd_home, role="eval judge", journal_salt=journal_salt
    )
    try:
        with guarded_generation(ctx, judge, "eval_scores[judge]"):
            judgments, _ = judge_pairwise(
                judge,
                [
                    (item.item_id, item.question, text, item.reference or "")
                    for item, text in zip(items, texts, strict=True)
                ],
                ctx.config.labeling.judge_max_new_tokens,
            )
    finally:
        judge.close()
    return judgments


def audit_thresholds(config: PipelineConfig) -> AuditThresholds:
    """The judge_audit checks' thresholds (``checks:``)."""
    checks = config.checks
    return AuditThresholds(
        min_swap_consistency=checks.min_judge_swap_consistency,
        max_position_bias=checks.max_judge_position_bias,
        min_gold_agreement=checks.min_judge_gold_agreement,
        max_length_bias=checks.max_judge_length_bias,
    )


@committed("report")
def make_report(ctx: StepContext) -> StepResult:
    store = ctx.store
    scores = store.read("eval_scores")
    if not scores:
        raise RuntimeError("report: eval_scores is empty; materialize eval_scores first")
    breakdown_rows = store.read("eval_breakdown")
    reward_rows = [
        {
            "benchmark": r["benchmark"],
            "source": "teacher" if r["model_role"] == "teacher" else "student",
            "score": r["reward_score"],
        }
        for r in store.read("eval_responses")
        if r["reward_score"] is not None and r["model_role"] in ("teacher", "rl_student")
    ]
    judged = any(row["metric"] in ("win_rate", "lc_win_rate") for row in scores)
    warnings = judge_warnings(ctx.config) if judged else []
    sft, rl = store.latest_version("sft_student"), store.latest_version("rl_student")
    sft_curve = store.read("sft_validation", sft_version=sft["data_version"]) if sft else []
    rl_curve = store.read("rl_validation", rl_version=rl["data_version"]) if rl else []
    audit_rows = sorted(
        store.read("judge_audit"), key=lambda r: (r["benchmark"], r["judge_role"], r["mode"], r["metric"])
    )
    findings = audit_findings(audit_rows, audit_thresholds(ctx.config)) if audit_rows else []
    data_version = content_hash(
        scores, breakdown_rows, reward_rows, warnings, rl_curve, sft_curve, audit_rows, findings
    )
    out_dir = ctx.rd_home / "reports" / data_version
    report = render_report(
        scores,
        out_dir,
        breakdown_rows,
        reward_rows,
        warnings=warnings,
        rl_validation=rl_curve,
        sft_validation=sft_curve,
        judge_audit=audit_rows,
        judge_audit_findings=findings,
    )
    latest = ctx.rd_home / "reports" / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():  # a copy of RD_HOME that followed the link made it a directory
        shutil.rmtree(latest)
    latest.symlink_to(out_dir.name)
    shown = [*report.summary_lines, *report.key_lines, *warnings]
    ctx.log("report:\n" + report.table_text + "\n" + "\n".join(shown))
    ctx.record_version("report", "", data_version)
    return StepResult(
        data_version,
        {
            "markdown": report.markdown,
            "table": report.table_text,
            "summary": "\n".join(report.summary_lines),
            "eval_keys": "\n".join(report.key_lines),
            "path": str(out_dir),
            "charts": [str(Path(p)) for p in report.png_paths],
            "warnings": "\n".join(warnings),
        },
    )
