"""The RL validation curve of each partition, for the report: a chart and a table per benchmark.

Rows are ``rl_validation`` rows of one RL student version: per validation step, agreement with the vote labels
(what selects the shipped step), the reward model's mean score, gold accuracy where gold exists (a monitor only),
mean length and KL. Reward rising while agreement falls is reward hacking; the chart shows both on one time axis
with the selected step marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CHART_FILE = "rl_validation.png"


def _by_benchmark(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["benchmark"], r["step"])):
        curves.setdefault(row["benchmark"], []).append(row)
    return curves


def _series(curve: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], row[key]) for row in curve if row.get(key) is not None]
    return [step for step, _ in points], [value for _, value in points]


def chart_rl_validation(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path | None:
    """One panel per benchmark: agreement and gold accuracy (left axis), mean reward (right axis), the selected
    step as a vertical line. None when there are no rows."""
    curves = _by_benchmark(rows)
    if not curves:
        return None
    fig, axes = plt.subplots(
        1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False, layout="constrained"
    )
    for ax, (benchmark, curve) in zip(axes.flat, curves.items(), strict=True):
        for key, label, style in (
            ("agreement", "agreement with vote labels", "-o"),
            ("gold_accuracy", "gold accuracy (monitor)", ":s"),
        ):
            steps, values = _series(curve, key)
            if steps:
                ax.plot(steps, values, style, label=label, markersize=4)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("RL step (0 = SFT student)")
        ax.set_ylabel("share of validation prompts")
        reward_ax = ax.twinx()
        steps, values = _series(curve, "mean_reward")
        if steps:
            reward_ax.plot(
                steps, values, "--^", color="#c44e52", label="mean reward-model score", markersize=4
            )
        reward_ax.set_ylabel("reward-model score")
        selected = next((row["step"] for row in curve if row.get("selected")), None)
        if selected is not None:
            ax.axvline(selected, color="#555555", lw=1.2, ls="-.", label=f"selected step {selected}")
        ax.set_title(f"{benchmark} (n={curve[0].get('prompts')})", fontsize=10)
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
        extra = reward_ax.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="best")
    fig.suptitle("RL validation: agreement vs. reward, and the shipped step", fontsize=11)
    path = Path(out_dir) / CHART_FILE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def rl_validation_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A table per benchmark: step, agreement (n), gold accuracy, mean reward, length, KL, the selected step."""
    if not rows:
        return ""
    parts = ["## RL validation", ""]
    for benchmark, curve in _by_benchmark(rows).items():
        parts += [
            f"### {benchmark}",
            "",
            "| step | agreement (n) | gold accuracy (monitor) | mean reward | mean length | KL | shipped |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
        ]
        for row in curve:
            parts.append(
                f"| {row['step']} | {_cell(row.get('agreement'))} ({row.get('agreement_n') or 0}) | "
                f"{_cell(row.get('gold_accuracy'))} | {_cell(row.get('mean_reward'))} | "
                f"{_cell(row.get('mean_length'), 1)} | {_cell(row.get('kl'), 4)} | "
                f"{'✓' if row.get('selected') else ''} |"
            )
        parts.append("")
    return "\n".join(parts)
