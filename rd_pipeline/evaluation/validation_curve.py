"""The validation curve of each partition of a validated stage (SFT or RL), for the report: a chart and a table
per benchmark.

Rows are ``sft_validation`` or ``rl_validation`` rows of one model version: per validation step, agreement with
the vote labels and, on open-ended prompts in SFT, the judge's win rate against the base student (what selects
the shipped step), gold accuracy where gold exists (a monitor only), mean length, and for RL the reward model's
mean score and the KL. Reward rising while agreement falls is reward hacking; the
chart shows both on one time axis with the selected step marked. Where the selected step falls in training (its
start, or the early, middle or late third) hints at over- or under-training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

from rd_pipeline.evaluation.metrics import training_phase

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class CurveStage:
    """A validated stage: its name (the table's prefix), title and the model it starts from (step 0)."""

    name: str
    title: str
    start_model: str

    @property
    def chart_file(self) -> str:
        return f"{self.name}_validation.png"


SFT_CURVE = CurveStage("sft", "SFT validation", "base student")
RL_CURVE = CurveStage("rl", "RL validation", "SFT student")


def _by_benchmark(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["benchmark"], r["step"])):
        curves.setdefault(row["benchmark"], []).append(row)
    return curves


def _series(curve: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], row[key]) for row in curve if row.get(key) is not None]
    return [step for step, _ in points], [value for _, value in points]


def chart_validation(rows: Sequence[dict[str, Any]], out_dir: Path, stage: CurveStage) -> Path | None:
    """One panel per benchmark: agreement and gold accuracy (left axis), mean reward where measured (right
    axis), the selected step as a vertical line. None when there are no rows."""
    curves = _by_benchmark(rows)
    if not curves:
        return None
    rewarded = any(row.get("mean_reward") is not None for row in rows)
    fig, axes = plt.subplots(
        1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False, layout="constrained"
    )
    for ax, (benchmark, curve) in zip(axes.flat, curves.items(), strict=True):
        for key, label, style in (
            ("agreement", "agreement with vote labels", "-o"),
            ("win_rate", f"win rate vs {stage.start_model} (judge)", "-D"),
            ("gold_accuracy", "gold accuracy (monitor)", ":s"),
        ):
            steps, values = _series(curve, key)
            if steps:
                ax.plot(steps, values, style, label=label, markersize=4)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"{stage.name.upper()} step (0 = {stage.start_model})")
        ax.set_ylabel("share of validation prompts")
        extra: tuple[list, list] = ([], [])
        if rewarded:
            reward_ax = ax.twinx()
            steps, values = _series(curve, "mean_reward")
            if steps:
                reward_ax.plot(
                    steps, values, "--^", color="#c44e52", label="mean reward-model score", markersize=4
                )
            reward_ax.set_ylabel("reward-model score")
            extra = reward_ax.get_legend_handles_labels()
        selected = next((row["step"] for row in curve if row.get("selected")), None)
        if selected is not None:
            ax.axvline(selected, color="#555555", lw=1.2, ls="-.", label=f"selected step {selected}")
        ax.set_title(f"{benchmark} (n={curve[0].get('prompts')})", fontsize=10)
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="best")
    versus = " vs. reward" if rewarded else ""
    judged = " and win rate" if any(row.get("win_rate") is not None for row in rows) else ""
    fig.suptitle(f"{stage.title}: agreement{judged}{versus}, and the shipped step", fontsize=11)
    path = Path(out_dir) / stage.chart_file
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# The table's columns: header, alignment, the cell of a row, and the key that must be measured somewhere for the
# column to be shown (None: always shown).
_Column = tuple[str, str, Callable[[dict[str, Any]], str], str | None]
_COLUMNS: tuple[_Column, ...] = (
    ("step", "---:", lambda row: str(row["step"]), None),
    (
        "agreement (n)",
        "---:",
        lambda row: f"{_cell(row.get('agreement'))} ({row.get('agreement_n') or 0})",
        None,
    ),
    (
        "win rate vs step 0 (n)",
        "---:",
        lambda row: f"{_cell(row.get('win_rate'))} ({row.get('win_n') or 0})",
        "win_rate",
    ),
    ("gold accuracy (monitor)", "---:", lambda row: _cell(row.get("gold_accuracy")), None),
    ("mean reward", "---:", lambda row: _cell(row.get("mean_reward")), "mean_reward"),
    ("mean length", "---:", lambda row: _cell(row.get("mean_length"), 1), None),
    ("KL", "---:", lambda row: _cell(row.get("kl"), 4), "kl"),
    ("shipped", ":---:", lambda row: "✓" if row.get("selected") else "", None),
)


def shipped_summary(rows: Sequence[dict[str, Any]], stage: CurveStage) -> str:
    """Which step ships, in words, and where it falls in the steps trained (the last step validated)."""
    selected = next((row["step"] for row in rows if row.get("selected")), None)
    if selected is None:
        return "Shipped: the last step (no validation score selected a step)."
    if selected == 0:
        return (
            f"Shipped: the {stage.start_model} (step 0): {stage.name.upper()} did not improve validation "
            f"{'agreement or win rate' if any(row.get('win_n') for row in rows) else 'agreement'}."
        )
    trained = max(row["step"] for row in rows)
    phase = training_phase(selected, trained)
    return f"Shipped: step {selected} of {trained} trained, in the {phase} third of training."


def validation_markdown(rows: Sequence[dict[str, Any]], stage: CurveStage) -> str:
    """The shipped step, then a table per benchmark: step, agreement (n), win rate against step 0 (n), gold
    accuracy, mean reward and KL where measured, length, the selected step; an open-ended benchmark says how it
    was judged, a benchmark with neither vote labels nor judgments that it took no part in selection."""
    if not rows:
        return ""
    columns = [c for c in _COLUMNS if c[3] is None or any(row.get(c[3]) is not None for row in rows)]
    parts = [f"## {stage.title}", "", shipped_summary(rows, stage), ""]
    for benchmark, curve in _by_benchmark(rows).items():
        parts += [f"### {benchmark}", ""]
        if any(row.get("win_n") for row in curve):
            parts += [
                f"Open-ended: the judge's preference of each answer over the {stage.start_model}'s answer to the "
                "same prompt, in both orders (ties and disagreeing orders count half; step 0 is 0.5).",
                "",
            ]
        elif not any(row.get("agreement_n") for row in curve):
            parts += [
                "No vote labels to agree with (open-ended, or none labelled): not used for selection.",
                "",
            ]
        parts += [
            "| " + " | ".join(c[0] for c in columns) + " |",
            "| " + " | ".join(c[1] for c in columns) + " |",
        ]
        parts += ["| " + " | ".join(c[2](row) for c in columns) + " |" for row in curve]
        parts.append("")
    return "\n".join(parts)
