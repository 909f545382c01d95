"""The report's tables and text: the terminal table, markdown tables and the student-vs-teacher summary lines.
Values are shown as percentages with the half-width of their 95% interval."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from rd_pipeline.config import MODEL_ROLES
from rd_pipeline.evaluation.metrics import Estimate, surpass_summary
from rd_pipeline.evaluation.report_rows import (
    METRIC_LABELS,
    METRICS,
    ROLE_LABELS,
    Score,
    benchmarks,
    parse_scores,
    roles_present,
)

STUDENT_PREFERENCE = ("rl_student", "sft_student", "base_student")


def cell(est: Estimate | None) -> str:
    if est is None or math.isnan(est.value):
        return "-"
    if math.isnan(est.ci_low) or math.isnan(est.ci_high):
        return f"{100 * est.value:.1f}"
    return f"{100 * est.value:.1f} ±{100 * est.half_width:.1f}"


def n_text(ests: Iterable[Estimate]) -> str:
    ns = sorted({e.n for e in ests})
    if not ns:
        return "-"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def table_rows(scores: list[Score]) -> tuple[list[str], list[list[str]]]:
    header = ["benchmark", "metric", *(ROLE_LABELS[r] for r in MODEL_ROLES), "n"]
    index = {(s.benchmark, s.metric, s.role): s.estimate for s in scores}
    rows = []
    for bench in benchmarks(scores):
        for metric in METRICS:
            ests = [index.get((bench, metric, role)) for role in MODEL_ROLES]
            if all(e is None for e in ests):
                continue
            present = [e for e in ests if e is not None]
            rows.append([bench, METRIC_LABELS[metric], *(cell(e) for e in ests), n_text(present)])
    return header, rows


def format_table(scores: list[dict]) -> str:
    """A terminal table: one row per benchmark and metric, one column per model role, value ± 95% CI in %."""
    parsed = parse_scores(scores)
    if not parsed:
        return "(no evaluation scores)"
    header, rows = table_rows(parsed)
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        out += [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    foot = "values in %, ± half-width of the 95% CI; '-' = not evaluated"
    return "\n".join([line(header), rule, *(line(r) for r in rows), foot])


def markdown_table(header: list[str], rows: list[list[str]], left: int = 2) -> str:
    """A markdown table whose first ``left`` columns are left-aligned and the others (numbers) right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_lines(scores: list[Score]) -> list[str]:
    """Per benchmark and metric: the most-trained student present against the teacher."""
    index = {(s.benchmark, s.metric, s.role): s.estimate for s in scores}
    lines = []
    for bench in benchmarks(scores):
        for metric in METRICS:
            teacher = index.get((bench, metric, "teacher"))
            student_role = next((r for r in STUDENT_PREFERENCE if (bench, metric, r) in index), None)
            if teacher is None or student_role is None:
                continue
            text = surpass_summary(index[(bench, metric, student_role)], teacher, METRIC_LABELS[metric])
            lines.append(f"{bench} ({ROLE_LABELS[student_role]}) {text}")
    return lines


def breakdown_markdown(bench: str, kind: str, index: Mapping[tuple[str, str], Estimate]) -> str:
    """A breakdown's markdown table: accuracy per group and model."""
    roles = roles_present(index)
    groups = sorted({g for g, _ in index})
    header = [kind.replace("_", " "), "n", *(ROLE_LABELS[r] for r in roles)]
    rows = []
    for g in groups:
        ests = [index.get((g, r)) for r in roles]
        rows.append([g, n_text(e for e in ests if e is not None), *(cell(e) for e in ests)])
    return f"### {bench} by {kind.replace('_', ' ')} (accuracy %)\n\n" + markdown_table(header, rows, left=1)
