"""The chart of the grid's RL validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rd_pipeline.cli.known_answer.grid_summary import runs_by_setting

CHART = Path("docs") / "images" / "rl_validation_curve.png"  # under the current directory


def validation_curves(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured run that has an RL validation curve: {seed, teacher, rewards, validation}."""
    return [
        {"seed": run["seed"], "teacher": t, "rewards": r, "validation": run["figures"]["rl_validation"]}
        for (t, r), runs in runs_by_setting(grid).items()
        for run in runs
        if (run["figures"].get("rl_validation") or {}).get("curve")
    ]


def plot_validation_curve(grid: dict[str, Any], out: Path = CHART, teacher: str | None = None,
                          rewards: str | None = None) -> Path | None:  # fmt: skip
    """Plot the RL validation curves of one setting (the first with a curve, or ``teacher`` and ``rewards``):
    mean reward and agreement with the vote labels per step for every seed, the shipped step marked. Returns
    the image's path, or None (saying so) when no run recorded a curve."""
    curves = [
        c
        for c in validation_curves(grid)
        if (teacher is None or c["teacher"] == teacher) and (rewards is None or c["rewards"] == rewards)
    ]
    if not curves:
        print(
            "no RL validation curve found: the rl_student lineage metrics of these runs hold no "
            "metrics['validation']['curve'] (the pipeline that made them did not record one)"
        )
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher, rewards = curves[0]["teacher"], curves[0]["rewards"]
    curves = [c for c in curves if c["teacher"] == teacher and c["rewards"] == rewards]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(curves):
        v, color = curve["validation"], colors[i % len(colors)]
        points = v["curve"]
        steps = [p["step"] for p in points]
        label = f"seed {curve['seed']}"
        start = points[0]["mean_reward"] if points[0]["step"] == 0 else None
        rewards_ = [
            None if r is None or start is None else r - start for r in (p["mean_reward"] for p in points)
        ]
        top.plot(steps, rewards_, "o-", color=color, label=label)
        bottom.plot(steps, [p["agreement"] for p in points], "o-", color=color, label=f"{label}: agreement")
        if any(p.get("gold_accuracy") is not None for p in points):
            bottom.plot(steps, [p.get("gold_accuracy") for p in points], ":", color=color, alpha=0.7)
        selected = v.get("selected_step")
        if selected is not None:
            for axis in (top, bottom):
                axis.axvline(selected, color=color, linestyle="--", alpha=0.5)
            chosen = [p for p in points if p["step"] == selected]
            if chosen:
                bottom.plot([selected], [chosen[0]["agreement"]], "*", color=color, markersize=14)
    top.set_ylabel("mean reward-model score\nminus step 0's")
    top.set_title(
        f"RL validation on held-out train prompts ({grid['task']}, teacher {teacher}, rewards {rewards})\n"
        "step 0 = SFT student; dashed line and star = shipped step",
        fontsize=10,
    )
    top.legend(fontsize=8)
    bottom.set_ylabel("agreement with vote labels\n(dotted: gold accuracy, monitor)")
    bottom.set_xlabel("RL optimizer step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return out
