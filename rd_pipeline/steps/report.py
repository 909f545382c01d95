"""report: the results table, charts and markdown report over every benchmark's eval scores, the validation curves
and the judge audit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rd_pipeline.config import PipelineConfig
from rd_pipeline.evaluation import render_report
from rd_pipeline.evaluation.judge_audit import AuditThresholds, audit_findings
from rd_pipeline.steps.commit import committed
from rd_pipeline.steps.context import StepContext, StepResult, content_hash
from rd_pipeline.steps.eval_judge import judge_warnings


def audit_thresholds(config: PipelineConfig) -> AuditThresholds:
    """The judge_audit checks' thresholds (``checks:``)."""
    checks = config.checks
    return AuditThresholds(
        min_swap_consistency=checks.min_judge_swap_consistency,
        max_position_bias=checks.max_judge_position_bias,
        min_gold_agreement=checks.min_judge_gold_agreement,
        max_length_bias=checks.max_judge_length_bias,
    )


def _reward_rows(eval_responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reward model's scores of the teacher's and the RL student's eval responses, by source."""
    return [
        {
            "benchmark": r["benchmark"],
            "source": "teacher" if r["model_role"] == "teacher" else "student",
            "score": r["reward_score"],
        }
        for r in eval_responses
        if r["reward_score"] is not None and r["model_role"] in ("teacher", "rl_student")
    ]


def _point_latest_at(out_dir: Path) -> None:
    """Make ``reports/latest`` (beside ``out_dir``) a relative link to ``out_dir``."""
    latest = out_dir.parent / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():  # a copy of RD_HOME that followed the link made it a directory
        shutil.rmtree(latest)
    latest.symlink_to(out_dir.name)


@committed("report")
def make_report(ctx: StepContext) -> StepResult:
    """Render the report of every benchmark's scores into ``reports/<data version>`` and point
    ``reports/latest`` at it."""
    store = ctx.store
    scores = store.read("eval_scores")
    if not scores:
        raise RuntimeError("report: eval_scores is empty; materialize eval_scores first")
    breakdown_rows = store.read("eval_breakdown")
    reward_rows = _reward_rows(store.read("eval_responses"))
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
    _point_latest_at(out_dir)
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
