"""Train a pairwise (Bradley-Terry) reward model with TRL's RewardTrainer and measure it on held-out pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rd_pipeline.config import RewardModelConfig
from rd_pipeline.training.loading import whole_model_loading
from rd_pipeline.training.metrics import step_values
from rd_pipeline.training.records import check_records
from rd_pipeline.training.scoring import RewardScorer
from rd_pipeline.training.selection import BestWeights, Validate, selection_callback
from rd_pipeline.training.stage import Stage, TrainedRun

PAIR_FIELDS = {"prompt": ("system", "user"), "chosen": ("assistant",), "rejected": ("assistant",)}
REWARD_STEP_KEYS = ("loss", "accuracy", "margin", "learning_rate", "grad_norm")


def _margins(pairs: Sequence[dict], kind: str) -> list[float] | None:
    """The margins when every pair has one, None when none has; an error for a partial or bad column."""
    present = [("margin" in pair and pair["margin"] is not None) for pair in pairs]
    if not any(present):
        return None
    margins = []
    for index, pair in enumerate(pairs):
        value = pair.get("margin")
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(
                f"{kind} #{index}: field 'margin' must be a finite number if any pair has one, got {value!r}"
            )
        margins.append(float(value))
    return margins


def pairwise_accuracy(scorer: RewardScorer, pairs: Sequence[dict], batch_size: int = 16) -> dict[str, Any]:
    """Fraction of pairs with score(chosen) > score(rejected) (ties count as wrong), and the mean gap."""
    if not pairs:
        return {"accuracy": None, "mean_gap": None, "pairs": 0}
    chosen = scorer.score([p["prompt"] + p["chosen"] for p in pairs], batch_size)
    rejected = scorer.score([p["prompt"] + p["rejected"] for p in pairs], batch_size)
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "accuracy": sum(gap > 0 for gap in gaps) / len(gaps),
        "mean_gap": sum(gaps) / len(gaps),
        "pairs": len(pairs),
    }


def _training_rows(pairs: Sequence[dict], margins: list[float] | None) -> list[dict]:
    """The trainer's rows: prompt, chosen and rejected, and the margin when the pairs have one."""
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    if margins is not None:
        rows = [{**row, "margin": margin} for row, margin in zip(rows, margins, strict=True)]
    return rows


def _trainer_builder(stage: Stage, rows: list[dict]):
    """A function of the trainer's output_dir that builds the RewardTrainer on a freshly seeded score head."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    def build(output_dir: str) -> RewardTrainer:
        set_seed(stage.seed)  # the score head is initialised randomly
        model = stage.load_model(AutoModelForSequenceClassification, num_labels=1)
        model.config.pad_token_id = stage.tokenizer.pad_token_id
        return RewardTrainer(
            model=model,
            args=RewardConfig(**stage.trainer_args(output_dir)),
            train_dataset=Dataset.from_list(rows),
            **stage.trainer_kwargs("SEQ_CLS"),
        )

    return build


def _pairs_fit_checker(rows: list[dict], max_length: int):
    """A check that the trainer kept at least one pair after leaving out those over ``max_length`` tokens."""

    def check(trainer) -> None:
        if len(trainer.train_dataset) == 0:
            raise ValueError(
                f"all {len(rows)} reward training pairs are longer than reward_model.max_length="
                f"{max_length} tokens; raise max_length or shorten the responses"
            )

    return check


def _heldout_validation(heldout_pairs: Sequence[dict], tokenizer) -> Validate:
    """Held-out pairwise accuracy (and mean gap) of the model being trained, scored in eval mode without
    gradients; the model's mode is restored afterwards."""

    def validate(step: int, model) -> tuple[float | None, dict[str, Any]]:
        training = model.training
        model.eval()
        try:
            heldout = pairwise_accuracy(RewardScorer.of_model(model, tokenizer), heldout_pairs)
        finally:
            model.train(training)
        return heldout["accuracy"], {"heldout_mean_gap": heldout["mean_gap"]}

    return validate


def _validation_metrics(best: BestWeights, heldout_pairs: Sequence[dict]) -> dict[str, Any]:
    """The validation curve and the selection, or a note that there was nothing to validate on."""
    metrics = {**best.summary(), "pairs": len(heldout_pairs), "selection_metric": "heldout_accuracy"}
    if not heldout_pairs:
        metrics |= {"selection_metric": None, "note": "no held-out pairs: not validated, the last step ships"}
    return metrics


def _heldout_metrics(run: TrainedRun, out_dir: Path, heldout_pairs: Sequence[dict]) -> dict[str, Any]:
    """Training accuracy of the last step, and the saved model's accuracy on the held-out pairs (scored on
    the main process only; None elsewhere)."""
    train_accuracy = step_values(run.history, "accuracy")
    heldout = {"accuracy": None, "mean_gap": None, "pairs": len(heldout_pairs)}
    if run.main_process:
        with whole_model_loading(), RewardScorer(str(out_dir)) as scorer:
            heldout = pairwise_accuracy(scorer, heldout_pairs)
    return {
        "train_accuracy_last": train_accuracy[-1] if train_accuracy else None,
        "heldout_accuracy": heldout["accuracy"],
        "heldout_mean_gap": heldout["mean_gap"],
        "heldout_pairs": heldout["pairs"],
    }


def train_reward_model(
    base: str,
    train_pairs: Sequence[dict],
    heldout_pairs: Sequence[dict],
    cfg: RewardModelConfig,
    out_dir: Path,
    seed: int = 0,
    revision: str | None = None,
    callbacks: Sequence[Any] = (),
    report_to: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a one-output sequence classifier initialised from ``base`` (at ``revision``) on preference pairs.

    Pairs are {"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message],
    "margin": float (optional)}; a margin enters the loss as -log sigmoid(r_chosen - r_rejected - margin).
    Pairs longer than ``cfg.max_length`` tokens are left out of training. The held-out pairs validate the
    model every ``cfg.eval_every_steps`` steps and at the last: the weights with the best held-out accuracy
    are the ones saved, and training stops after ``cfg.patience`` evaluations without improvement (without
    held-out pairs the last step's weights are saved). The merged checkpoint goes to ``out_dir``; metrics
    include ``validation`` (the curve, selected_step, stopped_early_at), heldout_accuracy of the saved
    checkpoint (None without held-out pairs, and in every process but the main one of an ``accelerate
    launch`` group, which alone scores it) and heldout_pairs.
    """
    from transformers import AutoModelForSequenceClassification

    check_records(train_pairs, "reward training pair", PAIR_FIELDS)
    if heldout_pairs:
        check_records(heldout_pairs, "held-out reward pair", PAIR_FIELDS)
    margins = _margins(train_pairs, "reward training pair")
    rows = _training_rows(train_pairs, margins)
    inputs = {"train": rows, "heldout": list(heldout_pairs)}
    stage = Stage.start(cfg, base, seed, revision, callbacks, inputs=inputs, report_to=report_to)
    best = BestWeights(patience=cfg.patience)
    if heldout_pairs:  # step 0 is not a candidate: its score head is random
        validate = _heldout_validation(heldout_pairs, stage.tokenizer)
        selection = selection_callback(best, cfg.eval_every_steps, validate, at_start=False)
        stage = replace(stage, callbacks=(*stage.callbacks, selection))
    run = stage.train(
        _trainer_builder(stage, rows),
        AutoModelForSequenceClassification,
        out_dir,
        _pairs_fit_checker(rows, cfg.max_length),
        num_labels=1,
    )
    best.recover(run.saved_selection)
    return {
        **stage.metrics(run, len(train_pairs), REWARD_STEP_KEYS),
        "examples_used": run.examples_used,
        "margin_used": margins is not None,
        "validation": _validation_metrics(best, heldout_pairs),
        **_heldout_metrics(run, out_dir, heldout_pairs),
    }
