"""Supervised fine-tuning of the student on prompt-completion conversations, with TRL's SFTTrainer, validated
on held-out prompts with the best checkpoint kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rd_pipeline.config import SftConfig
from rd_pipeline.training.base_comparison import BASE_RESPONSES_FILE, BaseComparison, PairwiseJudge
from rd_pipeline.training.records import check_records
from rd_pipeline.training.resume import trainer_state_dir
from rd_pipeline.training.selection import BestWeights, selection_callback
from rd_pipeline.training.stage import Stage
from rd_pipeline.training.validation import PolicyValidator, ValidationPrompt

SFT_FIELDS = {"prompt": ("system", "user", "assistant"), "completion": ("assistant",)}
SFT_STEP_KEYS = ("loss", "learning_rate", "grad_norm")


def train_sft(
    base: str,
    examples: Sequence[dict],
    cfg: SftConfig,
    out_dir: Path,
    seed: int = 0,
    revision: str | None = None,
    callbacks: Sequence[Any] = (),
    validation: Sequence[dict] = (),
    judge: PairwiseJudge | None = None,
    report_to: Sequence[str] = (),
) -> dict[str, Any]:
    """Fine-tune ``base`` (at ``revision``) on ``examples`` ({"prompt": [messages], "completion": [message]}).

    The loss covers the completion tokens only. Every ``cfg.eval_every_steps`` steps, at the last step and before
    the first (the base model is step 0) the model decodes the ``validation`` prompts (RL prompt records, see
    ``train_rl``) greedily. Verifiable prompts are scored by agreement with their vote labels; with a ``judge``,
    open-ended prompts by its preference of the response over the base model's (step 0) in both orders (see
    ``PolicyValidator`` for how both combine). The weights with the best score are the ones saved (ties keep the
    earlier step) and training stops after ``cfg.patience`` validations without improvement. The merged
    checkpoint and tokenizer are written to ``out_dir``; returns train_loss (mean), first_loss, final_loss,
    per_step, steps, examples, epochs, runtime_s and ``validation`` (the curve, selected_step, stopped_early_at).
    Runs in one process or in every process of an ``accelerate launch`` group.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    check_records(examples, "SFT example", SFT_FIELDS)
    inputs = {"examples": list(examples), "validation": list(validation)}
    stage = Stage.start(cfg, base, seed, revision, callbacks, inputs=inputs, report_to=report_to)
    best = BestWeights(patience=cfg.patience)
    validator = _validator(validation, judge, stage.tokenizer, cfg, out_dir)
    if validator is not None:
        selection = selection_callback(best, cfg.eval_every_steps, validator, at_start=True)
        stage = replace(stage, callbacks=(*stage.callbacks, selection))
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])

    def build_trainer(output_dir: str) -> SFTTrainer:
        args = SFTConfig(**stage.trainer_args(output_dir), completion_only_loss=True, packing=False)
        return SFTTrainer(
            model=stage.load_model(AutoModelForCausalLM),
            args=args,
            train_dataset=dataset,
            **stage.trainer_kwargs("CAUSAL_LM"),
        )

    run = stage.train(build_trainer, AutoModelForCausalLM, out_dir)
    best.recover(run.saved_selection)
    return {
        **stage.metrics(run, len(examples), SFT_STEP_KEYS),
        "examples_used": run.examples_used,
        "epochs": run.epochs,
        "validation": _validation_metrics(best, len(validation), validator),
    }


def _validator(
    validation: Sequence[dict], judge: PairwiseJudge | None, tokenizer: Any, cfg: SftConfig, out_dir: Path
) -> PolicyValidator | None:
    """What decodes the ``validation`` prompts greedily and scores the model on them, comparing open-ended
    responses with the base model's through ``judge``; None without validation prompts."""
    if not validation:
        return None
    prompts = [ValidationPrompt.from_record(record) for record in validation]
    comparison = None
    if judge is not None and any(p.open_ended for p in prompts):
        comparison = BaseComparison(judge, trainer_state_dir(out_dir) / BASE_RESPONSES_FILE)
    return PolicyValidator(prompts, tokenizer, cfg.validation_max_new_tokens, base_comparison=comparison)


def _validation_metrics(best: BestWeights, prompts: int, validator: PolicyValidator | None) -> dict[str, Any]:
    """The validation curve and the selection, or a note of why nothing was selected."""
    metric = validator.selection_metric if validator else None
    metrics = {**best.summary(), "prompts": prompts, "selection_metric": metric}
    if metric is None:
        why = "no labelled or judged validation prompts" if prompts else "no validation prompts"
        metrics["note"] = f"{why}: not selected, the last step ships"
    return metrics
