"""Supervised fine-tuning of the student on prompt-completion conversations, with TRL's SFTTrainer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rd_pipeline.config import SftConfig
from rd_pipeline.training.common import Stage, check_records

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
) -> dict[str, Any]:
    """Fine-tune ``base`` (at ``revision``) on ``examples`` ({"prompt": [messages], "completion": [message]}).

    The loss covers the completion tokens only. The merged checkpoint and tokenizer are written to
    ``out_dir``; returns train_loss (mean), first_loss, final_loss, per_step, steps, examples, epochs and
    runtime_s. Runs in one process or in every process of an ``accelerate launch`` group.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    check_records(examples, "SFT example", SFT_FIELDS)
    stage = Stage.start(cfg, base, seed, revision, callbacks, inputs=list(examples))
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
    return {
        **stage.metrics(run, len(examples), SFT_STEP_KEYS),
        "examples_used": run.examples_used,
        "epochs": run.epochs,
    }
