"""The targets of one run and its table."""

from __future__ import annotations

from typing import Any

from rd_pipeline.cli.known_answer.task import ROLES

TARGET_VOTE = "vote labels beat single samples"
TARGET_SFT = "SFT student beats base"
TARGET_RL_KEEPS = "RL not below SFT beyond its 95% interval"
TARGET_RL_REWARD = "RL raises mean reward on held-out prompts"
TARGET_RM = "reward model >= 0.7 on held-out gold pairs"


def _greater(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b


def targets(figures: dict[str, Any]) -> dict[str, bool | None]:
    """The targets of one run, each True, False, or None when a figure is missing."""
    acc, reward, diff = figures["accuracy"], figures["mean_reward"], figures["rl_minus_sft"]
    rm = figures["reward_model_gold_pair_accuracy"]
    keeps = diff["high"] if diff["high"] is not None else diff["mean"]
    return {
        TARGET_VOTE: _greater(figures["vote_label_accuracy"], figures["teacher_single_sample_accuracy"]),
        TARGET_SFT: _greater(acc["sft_student"], acc["base_student"]),
        TARGET_RL_KEEPS: None if keeps is None else keeps >= 0,
        TARGET_RL_REWARD: _greater(reward["rl_student"], reward["sft_student"]),
        TARGET_RM: None if rm is None else rm >= 0.7,
    }


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mark(ok: bool | None) -> str:
    return "pass" if ok else "MISS" if ok is False else "  - "


def table(figures: dict[str, Any], checks: dict[str, bool | None]) -> str:
    acc, reward, diff = figures["accuracy"], figures["mean_reward"], figures["rl_minus_sft"]
    by_temperature = ", ".join(
        f"T={t} {fmt(v)}" for t, v in figures["teacher_single_sample_accuracy_by_temperature"].items()
    )
    lines = [
        f"prompts: {figures['train_prompts']} train, {figures['eval_prompts']} held-out eval; samples: "
        f"{figures['teacher_samples']} teacher, {figures['student_samples']} student",
        "",
        f"{'measure':<58} value",
        f"{'teacher single-sample accuracy (train prompts)':<58} "
        f"{fmt(figures['teacher_single_sample_accuracy'])} ({by_temperature})",
        f"{'majority-vote label accuracy (labelled train prompts)':<58} {fmt(figures['vote_label_accuracy'])}",
        f"{'label coverage':<58} {fmt(figures['vote_label_coverage'])}",
        f"{'reward model, held-out gold pairs':<58} {fmt(figures['reward_model_gold_pair_accuracy'])}"
        f" (n={figures['reward_model_gold_pairs']})",
        f"{'reward model, held-out pseudo-label pairs (pipeline)':<58} "
        f"{fmt(figures['reward_model_heldout_accuracy_pseudo_labels'])} "
        f"(n={figures['reward_model_heldout_pairs']})",
        f"{'RL training reward, first -> last step':<58} {fmt(figures['rl_reward_start'])} -> "
        f"{fmt(figures['rl_reward_end'])}",
    ]
    validation = figures["rl_validation"]
    if validation:
        lines.append(
            f"{'RL validation agreement, step 0 (SFT) -> selected step':<58} "
            f"{fmt(validation['start_agreement'])} -> {fmt(validation['selected_agreement'])} "
            f"(step {validation['selected_step']})"
        )
    else:
        lines.append(f"{'RL validation curve':<58} not recorded in the rl_student lineage")
    lines += [
        "",
        f"{'model (greedy, held-out eval prompts)':<38} {'accuracy':>9} {'mean reward':>12}",
        *(f"{role:<38} {fmt(acc[role]):>9} {fmt(reward[role]):>12}" for role in ROLES),
        f"{'RL - SFT accuracy (paired 95% interval)':<38} {fmt(diff['mean']):>9}   "
        f"[{fmt(diff['low'])}, {fmt(diff['high'])}]",
        "",
        *(f"[{mark(ok)}] {name}" for name, ok in checks.items()),
    ]
    return "\n".join(lines)
