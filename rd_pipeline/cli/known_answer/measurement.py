"""Every figure of one run, from the pipeline's store and checkpoints, measured against the gold answers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks import get_benchmark, is_item_correct
from rd_pipeline.cli.known_answer.likelihood import likelihood_pair_accuracy
from rd_pipeline.cli.known_answer.stats import mean_or_none, paired_difference
from rd_pipeline.cli.known_answer.task import ROLES


def validation_summary(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The validation curve in a checkpoint's lineage metrics (SFT or RL), with step 0 (the model the stage
    started from: the base student for SFT, the SFT student for RL) and the selected step picked out; None when
    the lineage records no curve."""
    found = metrics.get("validation")
    if not isinstance(found, dict) or not found.get("curve"):
        return None
    curve = [
        {
            "step": point.get("step"),
            "agreement": point.get("agreement", point.get("score")),
            "gold_accuracy": point.get("gold_accuracy"),
            "mean_reward": point.get("mean_reward", point.get("reward")),
            "mean_length": point.get("mean_length"),
            "kl": point.get("kl"),
        }
        for point in found["curve"]
    ]
    by_step = {point["step"]: point for point in curve}
    selected = found.get("selected_step")
    start, chosen = by_step.get(0, {}), by_step.get(selected, {})
    return {
        "selection_metric": found.get("selection_metric"),
        "selected_step": selected,
        "stopped_early_at": found.get("stopped_early_at"),
        "prompts": found.get("prompts"),
        "start_agreement": start.get("agreement"),
        "selected_agreement": chosen.get("agreement"),
        "start_gold_accuracy": start.get("gold_accuracy"),
        "selected_gold_accuracy": chosen.get("gold_accuracy"),
        "start_mean_reward": start.get("mean_reward"),
        "selected_mean_reward": chosen.get("mean_reward"),
        "curve": curve,
    }


FIGURE_ORDER = (
    "train_prompts",
    "eval_prompts",
    "eval_temperature",
    "teacher_samples",
    "student_samples",
    "teacher_single_sample_accuracy",
    "teacher_single_sample_accuracy_by_temperature",
    "vote_label_accuracy",
    "vote_label_coverage",
    "accuracy",
    "mean_reward",
    "rl_minus_sft",
    "reward_pairs",
    "reward_model_heldout_accuracy_pseudo_labels",
    "reward_model_heldout_pairs",
    "reward_model_gold_pair_accuracy",
    "reward_model_gold_pairs",
    "likelihood_gold_pair_accuracy",
    "rl_rewards_config",
    "rl_reward_start",
    "rl_reward_end",
    "rl_validation",
    "sft_minus_base",
    "sft_validation",
    "rl_student_version",
    "reward_model_version",
    "reward_labels_version",
)
"""The figures of one run, in the order the result JSON lists them."""


def measure(config_file: Path) -> dict[str, Any]:
    """Every figure of the experiment, from the pipeline's store and checkpoints, against the gold answers."""
    from rd_pipeline.config import load_config
    from rd_pipeline.steps.context import StepContext
    from rd_pipeline.steps.prompts import row_to_item

    config = load_config(config_file)
    ctx = StepContext(config)
    prompt_rows = ctx.store.read("benchmark_prompts", "gsm8k")
    items = {row["prompt_id"]: row_to_item(row) for row in prompt_rows}
    prompts = {row["prompt_id"]: row["prompt"] for row in prompt_rows}
    found = {
        **_teacher_figures(ctx.store, items),
        **_eval_figures(ctx.store),
        **_model_figures(ctx, items, prompts, config.labeling.heldout_fraction),
        "eval_temperature": config.eval.temperature,
        "student_samples": len(ctx.store.read("student_responses", "gsm8k")),
    }
    return {key: found[key] for key in FIGURE_ORDER}


def _teacher_figures(store, items: dict[str, Any]) -> dict[str, Any]:
    """The teacher's single-sample accuracy (all samples and per temperature) and its vote labels' accuracy."""
    bench = get_benchmark("gsm8k")
    teacher_rows = store.read("teacher_responses", "gsm8k")
    single = [float(is_item_correct(items[r["prompt_id"]], r["response"])) for r in teacher_rows]
    by_temperature: dict[float, list[float]] = defaultdict(list)
    for row, correct in zip(teacher_rows, single, strict=True):
        by_temperature[row["temperature"]].append(correct)
    votes = {
        r["prompt_id"]: r["prompt_answer"]
        for r in store.read("pseudo_labels", "gsm8k")
        if r["prompt_labelled"]
    }
    vote_correct = [float(bench.answers_equal(answer, items[pid].gold)) for pid, answer in votes.items()]
    train_prompts = {r["prompt_id"] for r in teacher_rows}
    return {
        "train_prompts": len(train_prompts),
        "teacher_samples": len(teacher_rows),
        "teacher_single_sample_accuracy": mean_or_none(single),
        "teacher_single_sample_accuracy_by_temperature": {
            f"{t:g}": mean_or_none(v) for t, v in sorted(by_temperature.items())
        },
        "vote_label_accuracy": mean_or_none(vote_correct),
        "vote_label_coverage": len(votes) / len(train_prompts) if train_prompts else None,
    }


def _eval_figures(store) -> dict[str, Any]:
    """Accuracy and mean reward of each evaluated model, and the paired differences RL - SFT, SFT - base."""
    scores = {(r["model_role"], r["metric"]): r for r in store.read("eval_scores", "gsm8k")}
    eval_rows = store.read("eval_responses", "gsm8k")
    by_role: dict[str, list[dict]] = defaultdict(list)
    for row in eval_rows:
        by_role[row["model_role"]].append(row)
    correct = {role: {r["prompt_id"]: bool(r["correct"]) for r in rows} for role, rows in by_role.items()}

    def accuracy_of(role: str) -> float | None:
        row = scores.get((role, "accuracy"))
        return None if row is None else row["value"]

    def mean_reward(role: str) -> float | None:
        return mean_or_none([r["reward_score"] for r in by_role[role] if r["reward_score"] is not None])

    return {
        "eval_prompts": len({r["prompt_id"] for r in eval_rows}),
        "accuracy": {role: accuracy_of(role) for role in ROLES},
        "mean_reward": {role: mean_reward(role) for role in ROLES},
        "rl_minus_sft": paired_difference(correct.get("rl_student", {}), correct.get("sft_student", {})),
        "sft_minus_base": paired_difference(correct.get("sft_student", {}), correct.get("base_student", {})),
    }


def _model_figures(
    ctx, items: dict[str, Any], prompts: dict[str, str], heldout_fraction: float
) -> dict[str, Any]:
    """What the trained checkpoints' lineage records, and the reward model's accuracy on held-out gold pairs."""
    from rd_pipeline.labeling.pairs import pair_split
    from rd_pipeline.steps.checkpoints import checkpoint_dir, read_lineage

    def record_and_metrics(asset: str) -> tuple[dict[str, Any], Path, dict[str, Any]]:
        record = ctx.upstream_version(asset)
        path = checkpoint_dir(ctx, asset, record["data_version"])
        return record, path, read_lineage(path).get("metrics", {})

    rm_record, rm_path, rm_metrics = record_and_metrics("reward_model")
    rl_record, _, rl_metrics = record_and_metrics("rl_student")
    _, sft_path, sft_metrics = record_and_metrics("sft_student")
    gold_pairs = heldout_gold_pairs(ctx.store, items, prompts, heldout_fraction, pair_split)
    return {
        "reward_pairs": len(ctx.store.read("reward_pairs", "gsm8k")),
        "reward_model_heldout_accuracy_pseudo_labels": rm_metrics.get("heldout_accuracy"),
        "reward_model_heldout_pairs": rm_metrics.get("heldout_pairs"),
        "reward_model_gold_pair_accuracy": _gold_pair_accuracy(rm_path, gold_pairs),
        "reward_model_gold_pairs": len(gold_pairs),
        "likelihood_gold_pair_accuracy": {
            "base_student": likelihood_pair_accuracy(str(ctx.config.student.ref), gold_pairs),
            "sft_student": likelihood_pair_accuracy(str(sft_path), gold_pairs),
            "teacher": likelihood_pair_accuracy(str(ctx.config.teacher.ref), gold_pairs),
        },
        "rl_rewards_config": rl_metrics.get("rewards_config"),
        "rl_reward_start": rl_metrics.get("reward_start"),
        "rl_reward_end": rl_metrics.get("reward_end"),
        "rl_validation": validation_summary(rl_metrics),
        "sft_validation": validation_summary(sft_metrics),
        "rl_student_version": rl_record["data_version"],
        "reward_model_version": rm_record["data_version"],
        "reward_labels_version": ctx.upstream_version("reward_labels", "gsm8k")["data_version"],
    }


def _gold_pair_accuracy(reward_model: Path, gold_pairs: list[tuple[list, list]]) -> float | None:
    """Share of (gold-correct, gold-wrong) pairs the reward model scores the correct one higher on."""
    from rd_pipeline.training.scoring import RewardScorer

    with RewardScorer(str(reward_model)) as scorer:
        chosen = scorer.score([p[0] for p in gold_pairs])
        rejected = scorer.score([p[1] for p in gold_pairs])
    return mean_or_none([float(c > r) for c, r in zip(chosen, rejected, strict=True)])


def heldout_gold_pairs(store, items, prompts, heldout_fraction, pair_split) -> list[tuple[list, list]]:
    """(gold-correct, gold-wrong) conversations from teacher and student responses to prompts held out of
    reward training (the pipeline's own held-out split), distinct texts only."""
    responses: dict[str, set[str]] = defaultdict(set)
    for table in ("teacher_responses", "student_responses"):
        for row in store.read(table, "gsm8k"):
            if pair_split("gsm8k", row["prompt_id"], heldout_fraction) == "heldout":
                responses[row["prompt_id"]].add(row["response"])
    pairs = []
    for prompt_id, texts in sorted(responses.items()):
        good = sorted(t for t in texts if is_item_correct(items[prompt_id], t))
        bad = sorted(t for t in texts if not is_item_correct(items[prompt_id], t))
        for g, b in ((g, b) for g in good for b in bad):
            user = {"role": "user", "content": prompts[prompt_id]}
            pairs.append(
                ([user, {"role": "assistant", "content": g}], [user, {"role": "assistant", "content": b}])
            )
    return pairs
