"""A training stage: start it (precision, tokenizer, resume key), build its trainer's arguments, train and save
resumably, and report the metrics every stage shares."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd_pipeline.config import EpochTrainerConfig, TrainerConfig, versioned_dump
from rd_pipeline.hashing import short_hash
from rd_pipeline.training.loading import load_model, load_tokenizer
from rd_pipeline.training.metrics import batch_metrics, loss_metrics, per_step_metrics, step_values
from rd_pipeline.training.precision import Precision, choose_precision, release_memory
from rd_pipeline.training.resume import (
    drop_if_nothing_saved,
    finished_state,
    prepare_trainer_dir,
    saved_state,
    trainer_state_dir,
)
from rd_pipeline.training.saving import BaseModelRef, save_from_state, save_trained, selection_saved_with
from rd_pipeline.training.trainer_args import common_trainer_args, peft_lora_config


@dataclass(frozen=True)
class TrainedRun:
    """What a finished trainer leaves behind once its checkpoint is saved."""

    history: list[dict]
    batches: dict[str, Any]
    steps: int
    epochs: float | None
    examples_used: int
    main_process: bool
    resumed_from_step: int = 0
    saved_selection: dict[str, Any] | None = None  # the final state's selection, when saved from that state


def train_and_save(
    build_trainer: Callable[[str], Any],
    tokenizer,
    base: BaseModelRef,
    out_dir: Path,
    lora: bool,
    check_trainer: Callable[[Any], None] | None = None,
    resume_key: str = "",
    carried_files: Sequence[str] = (),
) -> TrainedRun:
    """The run every stage shares: build the trainer on its state directory (``trainer_state_dir``), check
    it, train (resuming from the state saved there by an interrupted run with the same ``resume_key``), save
    the checkpoint through the trainer (see ``save_trained``), delete the saved state, then free the trainer
    and its memory. The trainer also saves its state after the last step, so a crash while the checkpoint is
    saved or merged loses no step: the re-run saves the checkpoint from that state (``save_from_state``).
    ``carried_files`` are files the run's callbacks wrote into the state directory that move into the
    checkpoint (records of the run that survive a resume, like the RL rollouts)."""
    trainer_dir = trainer_state_dir(out_dir)
    try:
        trainer = build_trainer(str(trainer_dir))
        if check_trainer is not None:
            check_trainer(trainer)
        saved, finished = _train_resuming(trainer, trainer_dir, resume_key)
    except BaseException:
        drop_if_nothing_saved(trainer_dir)
        raise
    run = _trained_run(trainer, saved, finished)
    accelerator = trainer.accelerator
    if finished:
        save_from_state(saved[0], accelerator, tokenizer, base, out_dir, lora)
    else:
        save_trained(trainer, tokenizer, base, out_dir, lora)
    if accelerator.is_main_process:
        for name in carried_files:
            if (trainer_dir / name).is_file():
                shutil.move(trainer_dir / name, Path(out_dir) / name)
        shutil.rmtree(trainer_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    del trainer
    release_memory()
    return run


def _train_resuming(trainer, trainer_dir: Path, resume_key: str) -> tuple[tuple[Path, int] | None, bool]:
    """Train, resuming from the state an interrupted run with the same ``resume_key`` saved in
    ``trainer_dir``; returns that state (its directory and step, None: started afresh) and whether training
    had already finished there (then nothing is trained)."""
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        prepare_trainer_dir(trainer_dir, resume_key)
    accelerator.wait_for_everyone()
    saved = saved_state(trainer_dir)
    finished = saved is not None and finished_state(saved[0])
    if saved is not None and accelerator.is_main_process:
        done = ", where training had finished" if finished else ""
        print(f"resuming training from {saved[0]} (step {saved[1]}{done})", flush=True)
    if not finished:
        trainer.train(resume_from_checkpoint=str(saved[0]) if saved else None)
    return saved, finished


def _trained_run(trainer, saved: tuple[Path, int] | None, finished: bool) -> TrainedRun:
    """What the trainer leaves behind; read from the saved state when training had finished there."""
    if finished:
        # Only the final checkpoint was missing: resuming would run a step past the end, so it is saved from
        # the state instead.
        from transformers import TrainerState

        state = TrainerState.load_from_json(str(saved[0] / "trainer_state.json"))
    else:
        state = trainer.state
    return TrainedRun(
        history=list(state.log_history),
        batches=batch_metrics(trainer),
        steps=state.global_step,
        epochs=state.epoch,
        examples_used=len(trainer.train_dataset),
        main_process=trainer.accelerator.is_main_process,
        resumed_from_step=saved[1] if saved else 0,
        saved_selection=selection_saved_with(saved[0]) if finished else None,
    )


@dataclass(frozen=True)
class Stage:
    """A training stage under way: its settings, the checkpoint it starts from, seed, callbacks, precision,
    tokenizer, start time and resume key. SFT, reward model and RL each build their own trainer; the rest is
    here."""

    cfg: TrainerConfig
    base: str
    revision: str | None
    seed: int
    callbacks: tuple[Any, ...]
    precision: Precision
    tokenizer: Any
    started: float
    resume_key: str = ""
    report_to: tuple[str, ...] = ()

    @classmethod
    def start(
        cls,
        cfg: TrainerConfig,
        base: str,
        seed: int = 0,
        revision: str | None = None,
        callbacks: Sequence[Any] = (),
        inputs: Any = None,
        report_to: Sequence[str] = (),
    ) -> Stage:
        """Start the clock, choose the precision and load ``base``'s tokenizer. ``inputs`` (JSON) is what
        the stage trains on; with the settings, base and seed it makes the resume key, so saved trainer state
        is resumed only by a run of the same training. ``report_to`` names the integrations the trainer
        reports to (TRL ``report_to``; none when empty), which the resume key leaves out."""
        started = time.perf_counter()
        precision = choose_precision(cfg.launch.mixed_precision)
        tokenizer = load_tokenizer(base, revision)
        resume_key = short_hash(
            {
                "config": versioned_dump(cfg),
                "base": base,
                "revision": revision,
                "seed": seed,
                "inputs": inputs,
            }
        )
        return cls(
            cfg,
            base,
            revision,
            seed,
            tuple(callbacks),
            precision,
            tokenizer,
            started,
            resume_key,
            tuple(report_to),
        )

    def trainer_args(self, output_dir: str) -> dict[str, Any]:
        """The TRL config arguments of the stage's settings: shared ones, reporting, optimizer, batch and
        length."""
        cfg = self.cfg
        args = {
            **common_trainer_args(
                output_dir,
                self.seed,
                self.precision,
                cfg.gradient_accumulation_steps,
                cfg.gradient_checkpointing,
                cfg.save_every_steps,
            ),
            "max_steps": cfg.max_steps,
            "learning_rate": cfg.learning_rate,
            "per_device_train_batch_size": cfg.batch_size,
            "report_to": list(self.report_to) or "none",
        }
        if isinstance(cfg, EpochTrainerConfig):
            args.update(num_train_epochs=cfg.epochs, max_length=cfg.max_length)
        return args

    def load_model(self, auto_class, **config_overrides: Any):
        """The base checkpoint, loaded with ``auto_class`` in the training dtype."""
        return load_model(self.base, auto_class, self.precision, self.revision, **config_overrides)

    def trainer_kwargs(self, task_type: str) -> dict[str, Any]:
        """Trainer arguments every stage passes: tokenizer, LoRA settings for ``task_type``, callbacks."""
        return {
            "processing_class": self.tokenizer,
            "peft_config": peft_lora_config(self.cfg.lora, task_type),
            "callbacks": list(self.callbacks),
        }

    def train(
        self,
        build_trainer: Callable[[str], Any],
        auto_class,
        out_dir: Path,
        check_trainer: Callable[[Any], None] | None = None,
        carried_files: Sequence[str] = (),
        **config_overrides: Any,
    ) -> TrainedRun:
        """Build, check, train and save (see ``train_and_save``); LoRA adapters are merged into a fresh
        ``auto_class`` copy of the base checkpoint (with ``config_overrides``)."""
        base_ref = BaseModelRef(self.base, self.revision, auto_class, config_overrides)
        return train_and_save(
            build_trainer,
            self.tokenizer,
            base_ref,
            out_dir,
            self.cfg.lora.enabled,
            check_trainer,
            self.resume_key,
            carried_files,
        )

    def metrics(self, run: TrainedRun, examples: int, step_keys: Sequence[str]) -> dict[str, Any]:
        """The metrics every stage reports: losses, batch, per-step values, steps, examples, LoRA,
        precision, the step training resumed from (0: it started afresh) and the wall time since the stage
        started. A resumed run's history holds the steps before the resume too, so losses and per-step values
        cover every step; train_loss is then the mean step loss (the trainer's own covers the steps since the
        resume), while trainer_runtime_s and runtime_s count this run only."""
        losses = loss_metrics(run.history)
        if run.resumed_from_step:
            step_losses = step_values(run.history, "loss")
            losses["train_loss"] = sum(step_losses) / len(step_losses) if step_losses else None
        return {
            **losses,
            **run.batches,
            "per_step": per_step_metrics(run.history, step_keys),
            "steps": run.steps,
            "examples": examples,
            "lora": self.cfg.lora.enabled,
            "mixed_precision": self.precision.mixed_precision,
            "resumed_from_step": run.resumed_from_step,
            "runtime_s": round(time.perf_counter() - self.started, 2),
        }
