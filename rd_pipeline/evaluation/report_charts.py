"""The report's PNG charts: scores per model, accuracy by breakdown group, and reward-model score histograms."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rd_pipeline.evaluation.metrics import Estimate  # noqa: E402
from rd_pipeline.evaluation.report_rows import METRIC_LABELS, ROLE_LABELS, Score, roles_present  # noqa: E402

ROLE_COLORS = {
    "teacher": "#4c72b0",
    "base_student": "#8c8c8c",
    "sft_student": "#dd8452",
    "rl_student": "#55a868",
}
SOURCE_COLORS = {"teacher": "#4c72b0", "student": "#dd8452"}


def _percent_bars(ests: list[Estimate | None]) -> tuple[list[float], list[float], list[float]]:
    """Bar lengths in % (NaN without an estimate), and how far each one's 95% interval reaches below and above
    it (0 where unknown)."""
    values, below, above = [], [], []
    for e in ests:
        values.append(100 * e.value if e is not None else math.nan)
        below.append(0.0 if e is None or math.isnan(e.ci_low) else max(0.0, 100 * (e.value - e.ci_low)))
        above.append(0.0 if e is None or math.isnan(e.ci_high) else max(0.0, 100 * (e.ci_high - e.value)))
    return values, below, above


def _legend_handles(axes: Iterable[plt.Axes]) -> dict[str, Any]:
    """label -> the first handle drawn with it, over all of ``axes``: one legend entry per label."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    return handles


def _role_bars(
    ax: plt.Axes,
    groups: list[str],
    roles: list[str],
    index: Mapping[tuple[str, str], Estimate],
    horizontal: bool = False,
) -> list[tuple[np.ndarray, list[float]]]:
    """One bar per (group, role) in % with its 95% interval as an error bar, the roles of a group side by side
    around the group's tick (group i at i); per role, the bars' positions and lengths."""
    size = 0.8 / len(roles)
    drawn = []
    for j, role in enumerate(roles):
        vals, lows, highs = _percent_bars([index.get((g, role)) for g in groups])
        pos = np.arange(len(groups)) - 0.4 + size * (j + 0.5)
        style = {"label": ROLE_LABELS[role], "color": ROLE_COLORS[role]}
        errors = {"elinewidth": 0.8 if horizontal else 1, "ecolor": "#333333"}
        if horizontal:
            ax.barh(pos, vals, size * 0.9, xerr=[lows, highs], capsize=2, error_kw=errors, **style)
        else:
            ax.bar(pos, vals, size * 0.92, yerr=[lows, highs], capsize=3, error_kw=errors, **style)
        drawn.append((pos, vals))
    return drawn


def _bar_chart(
    ax: plt.Axes, groups: list[str], roles: list[str], index: Mapping[tuple[str, str], Estimate], ylabel: str
) -> None:
    """Grouped vertical bars (one group per x tick, one bar per role) with CI error bars and their values."""
    for pos, vals in _role_bars(ax, groups, roles, index):
        for p, v in zip(pos, vals, strict=True):
            if not math.isnan(v):
                ax.text(
                    p, 1.5, f"{v:.0f}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold"
                )
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def chart_scores(scores: list[Score], out_dir: Path) -> tuple[Path | None, str | None]:
    """``scores.png``: accuracy and win rates per model, with CI error bars; or why it was skipped."""
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
        _bar_chart(ax, groups, roles_present(index), index, ylabel)
        ax.set_title(title, fontsize=11)
    if wins:
        axes[0][-1].axhline(50, color="#333333", lw=0.8, ls="--")
    handles = _legend_handles(axes[0])
    fig.suptitle("Scores per model (error bars: 95% CI)", fontsize=12)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles), frameon=False)
    path = out_dir / "scores.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, None


def chart_breakdown(bench: str, kind: str, index: Mapping[tuple[str, str], Estimate], out_dir: Path) -> Path:
    """Horizontal grouped bars, one row per group, so long group names never overlap."""
    groups = sorted({g for g, _ in index})
    roles = roles_present(index)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.16 * len(roles) * len(groups) + 0.2 * len(groups)))
    _role_bars(ax, groups, roles, index, horizontal=True)
    ax.set_yticks(
        np.arange(len(groups)),
        [f"{g}  (n={max((e.n for (gg, _), e in index.items() if gg == g), default=0)})" for g in groups],
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


def chart_rewards(rewards: dict[str, dict[str, list[float]]], out_dir: Path) -> Path:
    """``reward_scores.png``: per benchmark, histograms of the reward model's scores of teacher and student
    responses, with their means."""
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
    legend = _legend_handles(axes.flat)
    legend["mean (dashed line)"] = Line2D([], [], color="#555555", ls="--", lw=1.2)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=len(legend), frameon=False)
    path = out_dir / "reward_scores.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
