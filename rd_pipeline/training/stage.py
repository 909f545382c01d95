"""What every trainer wrapper shares: device and precision, LoRA settings, input checks, metrics, saving and
resuming."""

from __future__ import annotations

import gc
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rd_pipeline.config import EpochTrainerConfig, LoraConfig, TrainerConfig, versioned_dump
from rd_pipeline.hashing import short_hash
from rd_pipeline.training.resume import (
    drop_if_nothing_saved,
    finished_state,
    prepare_trainer_dir,
    saved_state,
    trainer_state_dir,
)
from rd_pipeline.training.selection import SELECTION_STATE_FILE


@dataclass(frozen=True)
class Precision:
    """Where training runs, the dtype weights are loaded (and trained) in, and the autocast format."""

    use_cpu: bool
    bf16: bool
    fp16: bool
    dtype: torch.dtype

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"use_cpu": self.use_cpu, "bf16": self.bf16, "fp16": self.fp16}

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


def choose_precision(mixed_precision: str = "auto") -> Precision:
    """The training precision for a ``launch.mixed_precision`` setting.

    "auto" is bf16 autocast on a GPU that supports it, fp16 autocast on other GPUs and none on a CPU. The
    weights always load, train and are saved in float32: the optimizer needs fp32 master weights, since a
    small update (lr 1e-6) added to a bfloat16 weight rounds back to the same weight.
    """
    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "no" if not cuda else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"launch.mixed_precision must be auto, no, bf16 or fp16, got {mixed_precision!r}")
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("launch.mixed_precision 'fp16' needs a GPU; use 'no' or 'bf16' on a CPU")
    return Precision(
        use_cpu=not cuda, bf16=mixed_precision == "bf16", fp16=mixed_precision == "fp16", dtype=torch.float32
    )


def peft_lora_config(cfg: LoraConfig, task_type: str):
    """A peft ``LoraConfig`` for ``task_type`` ("CAUSAL_LM" or "SEQ_CLS"), or None when LoRA is disabled."""
    if not cfg.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type=task_type
    )


def common_trainer_args(
    output_dir: str,
    seed: int,
    precision: Precision,
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    save_every_steps: int = 0,
) -> dict[str, Any]:
    """Arguments every TRL config shares: seeded, logged each step, no external reporting, and the trainer's
    state saved every ``save_every_steps`` optimizer steps in ``output_dir`` (the latest only; 0: never)."""
    saving: dict[str, Any] = (
        {"save_strategy": "steps", "save_steps": save_every_steps, "save_total_limit": 1}
        if save_every_steps > 0
        else {"save_strategy": "no"}
    )
    return {
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "logging_steps": 1,
        **saving,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        **checkpointing_args(gradient_checkpointing),
        "ddp_find_unused_parameters": False,
        **precision.trainer_kwargs(),
    }


def checkpointing_args(enabled: bool, known_fields: set[str] | None = None) -> dict[str, Any]:
    """Activation (gradient) checkpointing under the name the installed transformers uses.

    Newer releases call it ``activation_checkpointing`` and keep ``gradient_checkpointing`` as a deprecated alias;
    older ones know only ``gradient_checkpointing``. ``known_fields`` defaults to ``TrainingArguments``' fields.
    """
    if known_fields is None:
        from transformers import TrainingArguments

        known_fields = set(TrainingArguments.__dataclass_fields__)
    name = (
        "activation_checkpointing" if "activation_checkpointing" in known_fields else "gradient_checkpointing"
    )
    if not enabled:
        return {name: False}
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def batch_metrics(trainer) -> dict[str, Any]:
    """The batch a trainer's optimizer steps saw, over all processes, and whether activations were recomputed."""
    args = trainer.args
    return {
        "global_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * args.world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_checkpointing": bool(
            getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None)
        ),
    }


def load_tokenizer(location: str, revision: str | None = None):
    """The checkpoint's tokenizer, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    location: str, auto_class, precision: Precision, revision: str | None = None, **config_overrides: Any
):
    """Load ``location`` (at ``revision``) with ``auto_class`` in the training dtype, on the CPU.

    No device_map: the trainer places the model on its process's device (DDP, FSDP and DeepSpeed need that).
    A ``quantization_config`` of method "gguf" is dropped first: checkpoints converted from GGUF hold plain
    dequantized weights, but the leftover entry would make the trainer refuse full fine-tuning.
    """
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(location, revision=revision, **config_overrides)
    quantization = getattr(config, "quantization_config", None)
    if isinstance(quantization, dict) and quantization.get("quant_method") == "gguf":
        del config.quantization_config
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its loading report would list the new head; ours below lists the rest
    try:
        model, info = auto_class.from_pretrained(
            location, revision=revision, config=config, dtype=precision.dtype, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    _report_missing_weights(model, info, location)
    return model


def _report_missing_weights(model, info: dict[str, Any], location: str) -> None:
    """Warn about checkpoint weights the model lacks or did not use, apart from its task head: a causal LM loaded
    as a reward model gets a new head (initialised, then trained) and leaves its language-model head unused."""
    from transformers.utils import logging as hf_logging

    prefix = f"{model.base_model_prefix}."

    def own(keys: Any) -> list[str]:
        return sorted(str(key) for key in keys or () if str(key).startswith(prefix))

    missing, unexpected = own(info.get("missing_keys")), own(info.get("unexpected_keys"))
    mismatched = sorted(str(entry[0]) for entry in info.get("mismatched_keys") or ())
    problems = [
        f"{label} {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unused", unexpected), ("of another shape", mismatched))
        if keys
    ]
    if problems:
        hf_logging.get_logger("transformers").warning(
            f"{location}: weights {'; '.join(problems)} (newly initialised where missing)"
        )


@contextmanager
def whole_model_loading() -> Iterator[None]:
    """Load whole models in this process alone, also inside a DeepSpeed ZeRO-3 process group.

    Under ZeRO-3 transformers builds every model in ``deepspeed.zero.Init``, which partitions each weight over
    the group as it is created, a collective every process must join: a model loaded by the main process
    alone (the LoRA merge, held-out scoring) would wait for the others forever. Elsewhere this does nothing.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def check_messages(value: object, kind: str, where: str, field: str, roles: Sequence[str]) -> None:
    """Raise a ValueError naming ``where`` and ``field`` unless ``value`` is a list of such messages."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{kind} {where}: field {field!r} must be a non-empty list of messages, got {value!r:.80}"
        )
    for position, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} must be a dict with a string 'content', "
                f"got {message!r:.80}"
            )
        if message.get("role") not in roles:
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} has role {message.get('role')!r}, "
                f"expected one of {list(roles)}"
            )


def check_records(records: Sequence[dict], kind: str, fields: dict[str, Sequence[str]]) -> None:
    """Check each record's fields are message lists with allowed roles; errors name the record and field."""
    if len(records) == 0:
        raise ValueError(f"no {kind} given: training needs at least one")
    for index, record in enumerate(records):
        where = f"#{index}"
        if not isinstance(record, dict):
            raise ValueError(f"{kind} {where} must be a dict, got {type(record).__name__}")
        for field, roles in fields.items():
            if field not in record:
                raise ValueError(f"{kind} {where} has no field {field!r} (fields: {sorted(record)})")
            check_messages(record[field], kind, where, field, roles)


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def step_values(log_history: Sequence[dict], key: str) -> list[float]:
    """The finite values of ``key`` in the per-step log entries, in step order."""
    return [v for entry in log_history if "step" in entry and (v := _finite(entry.get(key))) is not None]


def loss_metrics(log_history: Sequence[dict]) -> dict[str, Any]:
    """train_loss (the mean over training, as the trainer reports it), first and final step loss, runtime."""
    summary = next((entry for entry in reversed(log_history) if "train_loss" in entry), {})
    losses = step_values(log_history, "loss")
    train_loss = _finite(summary.get("train_loss"))
    if train_loss is None and losses:
        train_loss = sum(losses) / len(losses)
    return {
        "train_loss": train_loss,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "trainer_runtime_s": _finite(summary.get("train_runtime")),
    }


def per_step_metrics(log_history: Sequence[dict], keys: Sequence[str]) -> list[dict[str, float]]:
    """One entry per logged training step: the step number and the finite values of ``keys`` it logged."""
    rows = []
    for entry in log_history:
        if "step" not in entry or "train_loss" in entry:
            continue
        values = {key: v for key in keys if (v := _finite(entry.get(key))) is not None}
        if values:
            rows.append({"step": entry["step"], **values})
    return rows


# What a trainer state's checkpoint holds of the model itself: what ``trainer.save_model`` wrote into it.
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json")


def save_from_state(checkpoint: Path, accelerator, tokenizer, base: BaseModelRef, out_dir: Path, lora: bool):
    """Save the checkpoint from trainer state saved after the last step, as ``save_trained`` would from the
    trainer: its weights (``trainer.save_model``'s files) or its LoRA adapter merged into the base model, and
    the tokenizer. Every process calls this; the main process writes."""
    out_dir = Path(out_dir)
    if accelerator.is_main_process:
        if lora:
            _merge_adapter(Path(checkpoint), base, tokenizer, out_dir)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            for pattern in MODEL_FILE_PATTERNS:
                for file in Path(checkpoint).glob(pattern):
                    shutil.copy2(file, out_dir / file.name)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return out_dir


@dataclass(frozen=True)
class BaseModelRef:
    """The checkpoint training started from: where, which revision, which auto class and config overrides."""

    location: str
    revision: str | None
    auto_class: Any
    config_overrides: dict[str, Any]


def save_trained(trainer, tokenizer, base: BaseModelRef, out_dir: Path, lora: bool) -> Path:
    """Save the trained model as a plain safetensors checkpoint with its tokenizer in ``out_dir``.

    Every process calls this: ``trainer.save_model`` gathers sharded weights (FSDP, ZeRO-3) and writes on the
    main process only. LoRA adapters are saved the same way, then merged into a fresh copy of the base model
    on the main process, so the checkpoint never holds adapter weights.
    """
    out_dir = Path(out_dir)
    accelerator = trainer.accelerator
    target = out_dir.with_name(out_dir.name + ".adapter") if lora else out_dir
    trainer.save_model(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if lora:
            _merge_adapter(target, base, tokenizer, out_dir)
            shutil.rmtree(target)
        (out_dir / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def _merge_adapter(adapter_dir: Path, base: BaseModelRef, tokenizer, out_dir: Path) -> None:
    from peft import PeftModel

    full_precision = Precision(use_cpu=True, bf16=False, fp16=False, dtype=torch.float32)
    with whole_model_loading():
        model = load_model(
            base.location, base.auto_class, full_precision, base.revision, **base.config_overrides
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)


def _saved_selection(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint selection saved with a trainer state (see ``training.selection``), if any."""
    path = Path(checkpoint) / SELECTION_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


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
    except BaseException:
        drop_if_nothing_saved(trainer_dir)
        raise
    if finished:
        # Only the final checkpoint was missing: resuming would run a step past the end, so it is saved from
        # the state instead.
        from transformers import TrainerState

        state = TrainerState.load_from_json(str(saved[0] / "trainer_state.json"))
    else:
        state = trainer.state
    run = TrainedRun(
        history=list(state.log_history),
        batches=batch_metrics(trainer),
        steps=state.global_step,
        epochs=state.epoch,
        examples_used=len(trainer.train_dataset),
        main_process=accelerator.is_main_process,
        resumed_from_step=saved[1] if saved else 0,
        saved_selection=_saved_selection(saved[0]) if finished else None,
    )
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


def release_memory() -> None:
    """Collect garbage and return cached accelerator memory to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
