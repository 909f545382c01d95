"""The comparison report: a terminal table, a markdown page and PNG charts from eval score rows.

Inputs are plain row dicts (as read from the ``eval_scores`` table):

- scores: benchmark, model_role, model_version, metric, value, ci_low, ci_high, n (optional eval_key and
  eval_key_parts, the evaluation key the score was made under, shown per benchmark)
- breakdown rows: benchmark, model_role, group_kind, group, value, n (optional ci_low, ci_high)
- reward scores: benchmark, source ("teacher" or "student"), score

Values are fractions and are shown as percentages. When a role has several rows for the same
benchmark and metric, the last one wins. Charts whose data is missing are skipped, and the
markdown says which and why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rd_pipeline.config import MODEL_ROLES  # noqa: E402
from rd_pipeline.evaluation.judge_audit import audit_markdown  # noqa: E402
from rd_pipeline.evaluation.key import EvalKey  # noqa: E402
from rd_pipeline.evaluation.metrics import Estimate, surpass_summary, wilson_interval  # noqa: E402
from rd_pipeline.evaluation.validation_curve import (  # noqa: E402
    RL_CURVE,
    SFT_CURVE,
    chart_validation,
    validation_markdown,
)

METRICS = ("accuracy", "win_rate", "lc_win_rate")
STUDENT_PREFERENCE = ("rl_student", "sft_student", "base_student")
ROLE_LABELS = {
    "teacher": "teacher",
    "base_student": "base student",
    "sft_student": "SFT student",
    "rl_student": "RL student",
}
ROLE_COLORS = {
    "teacher": "#4c72b0",
    "base_student": "#8c8c8c",
    "sft_student": "#dd8452",
    "rl_student": "#55a868",
}
METRIC_LABELS = {"accuracy": "accuracy", "win_rate": "win rate", "lc_win_rate": "LC win rate"}
SOURCE_COLORS = {"teacher": "#4c72b0", "student": "#dd8452"}

SCORE_KEYS = ("benchmark", "model_role", "model_version", "metric", "value", "ci_low", "ci_high", "n")
BREAKDOWN_KEYS = ("benchmark", "model_role", "group_kind", "group", "value", "n")
REWARD_KEYS = ("benchmark", "source", "score")


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


@dataclass(frozen=True)
class _Score:
    benchmark: str
    role: str
    version: str
    metric: str
    estimate: Estimate


def _number(row: Mapping[str, Any], key: str, where: str, allow_nan: bool = True) -> float:
    value = row[key]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{where}.{key} = {value!r} is not a number")
    value = float(value)
    if math.isnan(value) and not allow_nan:
        raise ValueError(f"{where}.{key} is NaN")
    return value


def _check_keys(row: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} is a {type(row).__name__}, not a mapping")
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where} lacks field(s) {', '.join(missing)}")


def _parse_scores(scores: list[dict]) -> list[_Score]:
    parsed: dict[tuple[str, str, str], _Score] = {}
    for i, row in enumerate(scores):
        where = f"scores[{i}]"
        _check_keys(row, SCORE_KEYS, where)
        role, metric = row["model_role"], row["metric"]
        if role not in MODEL_ROLES:
            raise ValueError(f"{where}.model_role = {role!r} is not one of {', '.join(MODEL_ROLES)}")
        if metric not in METRICS:
            raise ValueError(f"{where}.metric = {metric!r} is not one of {', '.join(METRICS)}")
        n = _number(row, "n", where, allow_nan=False)
        if n < 0 or n != int(n):
            raise ValueError(f"{where}.n = {row['n']!r} is not a count")
        est = Estimate(
            _number(row, "value", where),
            _number(row, "ci_low", where),
            _number(row, "ci_high", where),
            int(n),
        )
        key = (str(row["benchmark"]), role, metric)
        parsed.pop(key, None)
        parsed[key] = _Score(key[0], role, str(row["model_version"]), metric, est)
    return list(parsed.values())


def _benchmarks(scores: Iterable[_Score]) -> list[str]:
    seen: list[str] = []
    for s in scores:
        if s.benchmark not in seen:
            seen.append(s.benchmark)
    return seen


def _cell(est: Estimate | None) -> str:
    if est is None or math.isnan(est.value):
        return "-"
    if math.isnan(est.ci_low) or math.isnan(est.ci_high):
        return f"{100 * est.value:.1f}"
    return f"{100 * est.value:.1f} ±{100 * est.half_width:.1f}"


def _n_text(ests: Iterable[Estimate]) -> str:
    ns = sorted({e.n for e in ests})
    if not ns:
        return "-"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def _table_rows(scores: list[_Score]) -> tuple[list[str], list[list[str]]]:
    header = ["benchmark", "metric", *(ROLE_LABELS[r] for r in MODEL_ROLES), "n"]
    index = {(s.benchmark, s.metric, s.role): s.estimate for s in scores}
    rows = []
    for bench in _benchmarks(scores):
        for metric in METRICS:
            ests = [index.get((bench, metric, role)) for role in MODEL_ROLES]
            if all(e is None for e in ests):
                continue
            present = [e for e in ests if e is not None]
            rows.append([bench, METRIC_LABELS[metric], *(_cell(e) for e in ests), _n_text(present)])
    return header, rows


def format_table(scores: list[dict]) -> str:
    """A terminal table: one row per benchmark and metric, one column per model role, value ± 95% CI in %."""
    parsed = _parse_scores(scores)
    if not parsed:
        return "(no evaluation scores)"
    header, rows = _table_rows(parsed)
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        out += [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    foot = "values in %, ± half-width of the 95% CI; '-' = not evaluated"
    return "\n".join([line(header), rule, *(line(r) for r in rows), foot])


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


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _summary_lines(scores: list[_Score]) -> list[str]:
    """Per benchmark and metric: the most-trained student present against the teacher."""
    index = {(s.benchmark, s.metric, s.role): s.estimate for s in scores}
    lines = []
    for bench in _benchmarks(scores):
        for metric in METRICS:
            teacher = index.get((bench, metric, "teacher"))
            student_role = next((r for r in STUDENT_PREFERENCE if (bench, metric, r) in index), None)
            if teacher is None or student_role is None:
                continue
            text = surpass_summary(index[(bench, metric, student_role)], teacher, METRIC_LABELS[metric])
            lines.append(f"{bench} ({ROLE_LABELS[student_role]}) {text}")
    return lines


def _bar_chart(
    ax: plt.Axes, groups: list[str], roles: list[str], index: Mapping[tuple[str, str], Estimate], ylabel: str
) -> None:
    """Grouped vertical bars (one group per x tick, one bar per role) with CI error bars."""
    width = 0.8 / len(roles)
    x = np.arange(len(groups))
    for j, role in enumerate(roles):
        vals, lows, highs = [], [], []
        for g in groups:
            e = index.get((g, role))
            v = e.value if e is not None else math.nan
            vals.append(100 * v)
            lo = 0.0 if e is None or math.isnan(e.ci_low) else 100 * (v - e.ci_low)
            hi = 0.0 if e is None or math.isnan(e.ci_high) else 100 * (e.ci_high - v)
            lows.append(max(lo, 0.0))
            highs.append(max(hi, 0.0))
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(
            pos,
            vals,
            width * 0.92,
            yerr=[lows, highs],
            capsize=3,
            label=ROLE_LABELS[role],
            color=ROLE_COLORS[role],
            error_kw={"elinewidth": 1, "ecolor": "#333333"},
        )
        for p, v in zip(pos, vals, strict=True):
            if not math.isnan(v):
                ax.text(
                    p, 1.5, f"{v:.0f}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold"
                )
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _roles_present(keys: Iterable[tuple[str, str]]) -> list[str]:
    present = {role for _, role in keys}
    return [r for r in MODEL_ROLES if r in present]


def _chart_scores(scores: list[_Score], out_dir: Path) -> tuple[Path | None, str | None]:
    acc = {(s.benchmark, s.role): s.estimate for s in scores if s.metric == "accuracy"}
    wins = {
        (f"{s.benchmark}\n{METRIC_LABELS[s.metric]}", s.role): s.estimate
        for s in scores
        if s.metric in ("win_rate", "lc_win_rate")
    }
    if not acc and not wins:
        return None, "scores chart skipped: no accuracy or win-rate rows"
    panels = [(acc, "accuracy (%)", "Accuracy on the eval subset")] if acc else []
    if wins:
        panels.append((wins, "win rate vs. reference (%)", "AlpacaEval 2 against the reference outputs"))
    ratios = [len({g for g, _ in p[0]}) + 0.6 for p in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3.2 + 1.6 * sum(ratios), 4.6),
        layout="constrained",
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
    )
    for ax, (index, ylabel, title) in zip(axes[0], panels, strict=True):
        groups = list(dict.fromkeys(g for g, _ in index))
        _bar_chart(ax, groups, _roles_present(index), index, ylabel)
        ax.set_title(title, fontsize=11)
    if wins:
        axes[0][-1].axhline(50, color="#333333", lw=0.8, ls="--")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.suptitle("Scores per model (error bars: 95% CI)", fontsize=12)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles), frameon=False)
    path = out_dir / "scores.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, None


def _parse_breakdown(rows: list[dict]) -> dict[tuple[str, str], dict[tuple[str, str], Estimate]]:
    """(benchmark, group_kind) -> {(group, role): estimate}; CI from the row or a Wilson interval."""
    out: dict[tuple[str, str], dict[tuple[str, str], Estimate]] = {}
    for i, row in enumerate(rows):
        where = f"breakdown_rows[{i}]"
        _check_keys(row, BREAKDOWN_KEYS, where)
        role = row["model_role"]
        if role not in MODEL_ROLES:
            raise ValueError(f"{where}.model_role = {role!r} is not one of {', '.join(MODEL_ROLES)}")
        value = _number(row, "value", where)
        n = int(_number(row, "n", where, allow_nan=False))
        if "ci_low" in row and "ci_high" in row:
            low, high = _number(row, "ci_low", where), _number(row, "ci_high", where)
        elif n > 0 and 0 <= value <= 1:
            low, high = wilson_interval(round(value * n), n)
        else:
            low = high = math.nan
        table = out.setdefault((str(row["benchmark"]), str(row["group_kind"])), {})
        table[(str(row["group"]), role)] = Estimate(value, low, high, n)
    return out


def _chart_breakdown(bench: str, kind: str, index: Mapping[tuple[str, str], Estimate], out_dir: Path) -> Path:
    """Horizontal grouped bars, one row per group, so long group names never overlap."""
    groups = sorted({g for g, _ in index})
    roles = _roles_present(index)
    height = 0.8 / len(roles)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.16 * len(roles) * len(groups) + 0.2 * len(groups)))
    y = np.arange(len(groups))
    for j, role in enumerate(roles):
        ests = [index.get((g, role)) for g in groups]
        vals = np.array([100 * e.value if e is not None else math.nan for e in ests])
        lo = [
            0.0 if e is None or math.isnan(e.ci_low) else max(0.0, 100 * (e.value - e.ci_low)) for e in ests
        ]
        hi = [
            0.0 if e is None or math.isnan(e.ci_high) else max(0.0, 100 * (e.ci_high - e.value)) for e in ests
        ]
        ax.barh(
            y - 0.4 + height * (j + 0.5),
            vals,
            height * 0.9,
            xerr=[lo, hi],
            capsize=2,
            label=ROLE_LABELS[role],
            color=ROLE_COLORS[role],
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
        )
    ax.set_yticks(
        y, [f"{g}  (n={max((e.n for (gg, _), e in index.items() if gg == g), default=0)})" for g in groups]
    )
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%), error bars: 95% CI")
    ax.set_title(f"{bench}: accuracy by {kind.replace('_', ' ')}", fontsize=12, pad=28)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(roles), frameon=False, fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{bench}_by_{kind}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _parse_rewards(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for i, row in enumerate(rows):
        where = f"reward_scores[{i}]"
        _check_keys(row, REWARD_KEYS, where)
        source = row["source"]
        if source not in SOURCE_COLORS:
            raise ValueError(f"{where}.source = {source!r} is not 'teacher' or 'student'")
        score = _number(row, "score", where)
        if math.isfinite(score):
            out.setdefault(str(row["benchmark"]), {}).setdefault(source, []).append(score)
    return out


def _chart_rewards(rewards: dict[str, dict[str, list[float]]], out_dir: Path) -> Path:
    benches = list(rewards)
    cols = min(2, len(benches))
    nrows = math.ceil(len(benches) / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(max(5.2 * cols, 7.5), 3.4 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    for ax, bench in zip(axes.flat, benches, strict=False):
        by_source = rewards[bench]
        everything = np.concatenate([np.asarray(v) for v in by_source.values()])
        lo, hi = float(everything.min()), float(everything.max())
        bins = np.linspace(lo, hi, 21) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, 3)
        for source in ("teacher", "student"):
            values = by_source.get(source)
            if not values:
                continue
            ax.hist(
                values,
                bins=bins,
                alpha=0.5,
                color=SOURCE_COLORS[source],
                edgecolor=SOURCE_COLORS[source],
                label=f"{source} responses",
            )
            ax.axvline(float(np.mean(values)), color=SOURCE_COLORS[source], ls="--", lw=1.2)
        means = ", ".join(
            f"{src} {np.mean(v):.2f} (n={len(v)})"
            for src in ("teacher", "student")
            if (v := by_source.get(src))
        )
        ax.set_title(f"{bench}\nmean: {means}", fontsize=10)
        ax.set_xlabel("reward-model score")
        ax.set_ylabel("responses")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(benches) :]:
        ax.set_visible(False)
    fig.suptitle("Reward-model scores of teacher vs. student responses", fontsize=12)
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, h)
    legend["mean (dashed line)"] = Line2D([], [], color="#555555", ls="--", lw=1.2)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=len(legend), frameon=False)
    path = out_dir / "reward_scores.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _breakdown_markdown(bench: str, kind: str, index: Mapping[tuple[str, str], Estimate]) -> str:
    roles = _roles_present(index)
    groups = sorted({g for g, _ in index})
    header = [kind.replace("_", " "), "n", *(ROLE_LABELS[r] for r in roles)]
    rows = []
    for g in groups:
        ests = [index.get((g, r)) for r in roles]
        rows.append([g, _n_text(e for e in ests if e is not None), *(_cell(e) for e in ests)])
    align = ["---", "---:"] + ["---:"] * len(roles)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return f"### {bench} by {kind.replace('_', ' ')} (accuracy %)\n\n" + "\n".join(lines)


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
    parsed = _parse_scores(scores)
    breakdowns = _parse_breakdown(breakdown_rows or [])
    rewards = _parse_rewards(reward_scores or [])
    table_text = format_table(scores)
    lines = _summary_lines(parsed)
    pngs: list[Path] = []
    skipped: list[str] = []

    path, why = _chart_scores(parsed, out_dir)
    if path is not None:
        pngs.append(path)
    if why:
        skipped.append(why)
    breakdown_paths = {key: _chart_breakdown(*key, index, out_dir) for key, index in breakdowns.items()}
    pngs.extend(breakdown_paths.values())
    if not any(bench == "gsm_plus" and kind == "perturbation_type" for bench, kind in breakdowns):
        skipped.append("GSM-Plus perturbation-type chart skipped: no gsm_plus breakdown rows")
    if rewards:
        pngs.append(_chart_rewards(rewards, out_dir))
    else:
        skipped.append("reward-score chart skipped: no reward-model scores")
    curves = ((SFT_CURVE, sft_validation or []), (RL_CURVE, rl_validation or []))
    for stage, rows in curves:
        chart = chart_validation(rows, out_dir, stage)
        if chart is not None:
            pngs.append(chart)

    md = ["# Distillation report", ""]
    warnings = list(warnings or [])
    if warnings:
        md += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if parsed:
        header, rows = _table_rows(parsed)
        md += [
            "## Scores",
            "",
            "Values in %, ± half-width of the 95% confidence interval; '-' = not evaluated.",
            "",
        ]
        md += [_markdown_table(header, rows), ""]
        versions = sorted({(MODEL_ROLES.index(s.role), s.role, s.version) for s in parsed})
        md += ["Model versions: " + ", ".join(f"{ROLE_LABELS[r]} `{v}`" for _, r, v in versions), ""]
        md += _eval_keys_markdown(scores)
    else:
        md += ["No evaluation scores yet.", ""]
    md += ["## Student vs. teacher", ""]
    md += [f"- {line}" for line in lines] or ["- no benchmark has both a teacher and a student score"]
    md.append("")
    if pngs:
        md += ["## Charts", ""]
        for p in pngs:
            md += [f"![{p.stem}]({p.name})", ""]
    for (bench, kind), index in breakdowns.items():
        md += [_breakdown_markdown(bench, kind, index), ""]
    md += [validation_markdown(rows, stage) for stage, rows in curves if rows]
    if judge_audit:
        md.append(audit_markdown(judge_audit, judge_audit_findings or []))
    if skipped:
        md += ["## Not shown", ""] + [f"- {s}" for s in skipped] + [""]
    markdown = "\n".join(md)
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(markdown)
    return Report(markdown, table_text, lines, pngs, markdown_path, skipped, warnings, eval_key_lines(scores))
