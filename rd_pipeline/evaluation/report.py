"""The comparison report: a terminal table, a markdown page and PNG charts from eval score rows.

Inputs are plain row dicts as read from the eval tables (``report_rows`` checks and parses them); the terminal
and markdown tables are in ``report_tables``, the charts in ``report_charts``. Charts whose data is missing are
skipped, and the markdown says which and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rd_pipeline.config import MODEL_ROLES
from rd_pipeline.evaluation.judge_audit import audit_markdown
from rd_pipeline.evaluation.key import EvalKey
from rd_pipeline.evaluation.metrics import Estimate
from rd_pipeline.evaluation.report_charts import chart_breakdown, chart_rewards, chart_scores
from rd_pipeline.evaluation.report_rows import (
    ROLE_LABELS,
    Score,
    parse_breakdown,
    parse_rewards,
    parse_scores,
)
from rd_pipeline.evaluation.report_tables import (
    breakdown_markdown,
    format_table,
    markdown_table,
    summary_lines,
    table_rows,
)
from rd_pipeline.evaluation.validation_curve import RL_CURVE, SFT_CURVE, chart_validation, validation_markdown


@dataclass
class Report:
    """A rendered report; ``markdown_path`` and every PNG lie in the output directory."""

    markdown: str
    table_text: str
    summary_lines: list[str]
    png_paths: list[Path]
    markdown_path: Path | None = None
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    key_lines: list[str] = field(default_factory=list)  # each benchmark's evaluation key (``eval_key_lines``)


def _eval_keys(scores: list[dict]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """Per benchmark, the evaluation key of its scores and the key's parts (None where rows carry no key)."""
    keys: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
    for row in scores:
        key, parts = row.get("eval_key"), row.get("eval_key_parts")
        keys[str(row["benchmark"])] = (key, json.loads(parts) if parts else None)
    return keys


def eval_key_lines(scores: list[dict]) -> list[str]:
    """One line per benchmark: the evaluation key its scores were made under (short hash) and a short hash of
    each of the key's parts (see ``rd_pipeline.evaluation.key``)."""
    lines = []
    for bench, (key, parts) in _eval_keys(scores).items():
        if key is None or parts is None:
            lines.append(f"{bench}: evaluation key not recorded (scored before evaluation keys)")
            continue
        shown = ", ".join(f"{name} {value}" for name, value in EvalKey(parts).part_hashes().items())
        lines.append(f"{bench}: evaluation key {key[:8]} ({shown})")
    return lines


def _eval_keys_markdown(scores: list[dict]) -> list[str]:
    """The "Evaluation keys" section: each benchmark's key and its parts in full."""
    md = [
        "## Evaluation keys",
        "",
        "Scores are reused while their key is unchanged; `rd materialize --select eval_scores --refresh` "
        "evaluates again and compares.",
        "",
    ]
    for line, (_, parts) in zip(eval_key_lines(scores), _eval_keys(scores).values(), strict=True):
        md += [f"- {line}", ""]
        if parts is not None:
            md += ["```json", json.dumps(parts, indent=2, sort_keys=True), "```", ""]
    return md


def render_report(
    scores: list[dict],
    out_dir: Path,
    breakdown_rows: list[dict] | None = None,
    reward_scores: list[dict] | None = None,
    warnings: list[str] | None = None,
    rl_validation: list[dict] | None = None,
    sft_validation: list[dict] | None = None,
    judge_audit: list[dict] | None = None,
    judge_audit_findings: list[str] | None = None,
) -> Report:
    """Render the comparison table, summary lines, charts and ``report.md`` into ``out_dir``.

    ``warnings`` (e.g. an eval judge that is also an evaluated model) are listed first, under "Warnings".

    Charts: ``scores.png`` (accuracy and AlpacaEval win rates per model, with CI error bars), one
    ``<benchmark>_by_<group_kind>.png`` per breakdown (GSM-Plus perturbation type, MMLU-Pro category)
    and ``reward_scores.png`` (reward-model score histograms of teacher vs. student responses), and with
    ``sft_validation`` rows (of one SFT student) and ``rl_validation`` rows (of one RL student)
    ``sft_validation.png`` and ``rl_validation.png``, the step each shipped and a table per benchmark of its curve.
    With ``judge_audit`` rows, a "Judge audit" section: each judge's metrics, then ``judge_audit_findings`` (what
    falls short of the checks' thresholds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parsed = parse_scores(scores)
    breakdowns = parse_breakdown(breakdown_rows or [])
    rewards = parse_rewards(reward_scores or [])
    table_text = format_table(scores)
    lines = summary_lines(parsed)
    curves = ((SFT_CURVE, sft_validation or []), (RL_CURVE, rl_validation or []))
    pngs, skipped = _render_charts(out_dir, parsed, breakdowns, rewards, curves)
    warnings = list(warnings or [])
    md = [
        "# Distillation report",
        "",
        *_list_section("Warnings", warnings),
        *_scores_section(scores, parsed),
        "## Student vs. teacher",
        "",
        *([f"- {line}" for line in lines] or ["- no benchmark has both a teacher and a student score"]),
        "",
        *_charts_section(pngs),
    ]
    for (bench, kind), index in breakdowns.items():
        md += [breakdown_markdown(bench, kind, index), ""]
    md += [validation_markdown(rows, stage) for stage, rows in curves if rows]
    if judge_audit:
        md.append(audit_markdown(judge_audit, judge_audit_findings or []))
    md += _list_section("Not shown", skipped)
    markdown = "\n".join(md)
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(markdown)
    return Report(markdown, table_text, lines, pngs, markdown_path, skipped, warnings, eval_key_lines(scores))


def _render_charts(
    out_dir: Path,
    parsed: list[Score],
    breakdowns: dict[tuple[str, str], dict[tuple[str, str], Estimate]],
    rewards: dict[str, dict[str, list[float]]],
    curves: tuple[tuple[str, list[dict]], ...],
) -> tuple[list[Path], list[str]]:
    """Every chart there is data for, in report order, and a line for each chart skipped for want of data."""
    pngs: list[Path] = []
    skipped: list[str] = []
    path, why = chart_scores(parsed, out_dir)
    if path is not None:
        pngs.append(path)
    if why:
        skipped.append(why)
    pngs += [chart_breakdown(*key, index, out_dir) for key, index in breakdowns.items()]
    if not any(bench == "gsm_plus" and kind == "perturbation_type" for bench, kind in breakdowns):
        skipped.append("GSM-Plus perturbation-type chart skipped: no gsm_plus breakdown rows")
    if rewards:
        pngs.append(chart_rewards(rewards, out_dir))
    else:
        skipped.append("reward-score chart skipped: no reward-model scores")
    for stage, rows in curves:
        chart = chart_validation(rows, out_dir, stage)
        if chart is not None:
            pngs.append(chart)
    return pngs, skipped


def _list_section(title: str, items: list[str]) -> list[str]:
    """A markdown section listing ``items``; nothing when there are none."""
    return [f"## {title}", "", *(f"- {item}" for item in items), ""] if items else []


def _scores_section(scores: list[dict], parsed: list[Score]) -> list[str]:
    """The "Scores" section: the table, the model versions and the evaluation keys."""
    if not parsed:
        return ["No evaluation scores yet.", ""]
    header, rows = table_rows(parsed)
    versions = sorted({(MODEL_ROLES.index(s.role), s.role, s.version) for s in parsed})
    return [
        "## Scores",
        "",
        "Values in %, ± half-width of the 95% confidence interval; '-' = not evaluated.",
        "",
        markdown_table(header, rows),
        "",
        "Model versions: " + ", ".join(f"{ROLE_LABELS[r]} `{v}`" for _, r, v in versions),
        "",
        *_eval_keys_markdown(scores),
    ]


def _charts_section(pngs: list[Path]) -> list[str]:
    """The "Charts" section: each chart inline; nothing without charts."""
    if not pngs:
        return []
    return ["## Charts", "", *(line for p in pngs for line in (f"![{p.stem}]({p.name})", ""))]
