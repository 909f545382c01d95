"""Checkpoint selection by a validation score: keep the best weights seen, stop after ``patience`` evaluations
without improvement, and ship the best.

``BestWeights`` holds the bookkeeping and a CPU copy of the trainable weights of the best evaluation (the
LoRA adapters only, with LoRA). ``SelectionCallback`` is the trainer callback around it that a training stage
feeds with its own validation score: the reward model with its held-out pair accuracy, RL with its validation
agreement. At the last step, or when patience runs out, the best weights are put back into the model before
the trainer saves its final state, so the checkpoint saved (also from that state, after a crash) is the best one.
The curve, the best step, the counters (``selection.json``) and the best weights are saved with every trainer
state, so a run resumed after a crash selects as an uninterrupted one. Under ZeRO-3 or FSDP2 each process keeps
and saves the shard of the weights it holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Not *.safetensors: a trainer checkpoint's safetensors files are the model's (see saving.MODEL_FILE_PATTERNS).
BEST_WEIGHTS_FILE = "selection-best{rank}.pt"


def _local(param: torch.Tensor) -> torch.Tensor:
    """The part of a parameter this process holds: the whole tensor, its DeepSpeed ZeRO-3 partition, or its
    FSDP2 (DTensor) shard."""
    if hasattr(param, "ds_tensor"):
        return param.ds_tensor
    if hasattr(param, "to_local"):
        return param.to_local()
    return param


def is_sharded(model) -> bool:
    """Whether each process holds only a shard of the trainable weights (ZeRO-3, FSDP2)."""
    return any(
        hasattr(p, "ds_tensor") or hasattr(p, "to_local") for p in model.parameters() if p.requires_grad
    )


def trainable_weights(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights that train (all of them in full fine-tuning, the adapters with LoRA), of the
    shard this process holds when weights are sharded."""
    return {
        name: _local(param).detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from ``trainable_weights`` in this process) into ``model``'s parameters in place."""
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise ValueError(f"kept weights {missing[:4]} are not parameters of the model being trained")
    with torch.no_grad():
        for name, value in weights.items():
            target = _local(params[name])
            target.copy_(value.to(target.device, target.dtype))


def weights_file(directory: Path, model) -> Path:
    """Where this process saves and finds the kept weights in a trainer checkpoint: one file, or one per
    process rank when weights are sharded."""
    rank = ""
    if is_sharded(model) and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = f"-rank{torch.distributed.get_rank()}"
    return Path(directory) / BEST_WEIGHTS_FILE.format(rank=rank)


@dataclass
class BestWeights:
    """The validation curve of one run, its best point and the weights there.

    ``offer`` records a score (higher is better; None or NaN never counts as better); a score beats the best
    only when it is higher by more than ``min_delta``, so ties keep the earlier, less trained weights.
    """

    patience: int = 0  # evaluations without improvement before stopping; 0: never stop early
    min_delta: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    since_best: int = 0
    stopped_early_at: int | None = None
    stop_reason: str | None = None
    weights: dict[str, torch.Tensor] | None = None

    def offer(self, step: int, score: float | None, model, **values: Any) -> bool:
        """Record the evaluation at ``step``; keeps the model's weights when it is the best so far."""
        valid = score is not None and math.isfinite(score)
        improved = valid and (self.best_score is None or score > self.best_score + self.min_delta)
        self.curve.append({"step": step, "score": score if valid else None, **values})
        if improved:
            self.best_step, self.best_score, self.since_best = step, float(score), 0
            self.weights = trainable_weights(model)
        else:
            self.since_best += 1
        return improved

    @property
    def patience_exhausted(self) -> bool:
        return self.patience > 0 and self.best_step is not None and self.since_best >= self.patience

    def restore(self, model) -> None:
        """Put the best weights back into ``model`` (nothing to do when none were kept)."""
        if self.weights is not None:
            load_weights(model, self.weights)

    def summary(self) -> dict[str, Any]:
        """The curve and the selection, JSON-ready: ``selected_step`` is None when no score was valid."""
        return {
            "curve": self.curve,
            "selected_step": self.best_step,
            "selected_score": self.best_score,
            "stopped_early_at": self.stopped_early_at,
            "stop_reason": self.stop_reason,
            "patience": self.patience,
        }

    # Persistence with the trainer state, for resuming.
    def state(self) -> dict[str, Any]:
        return {
            "curve": self.curve,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "since_best": self.since_best,
            "stopped_early_at": self.stopped_early_at,
            "stop_reason": self.stop_reason,
        }

    def load_state(self, saved: dict[str, Any], saved_weights: Path) -> None:
        """Go on from the selection saved with a trainer state (``state()``) and its kept weights."""
        self.curve = list(saved.get("curve", []))
        self.best_step, self.best_score = saved.get("best_step"), saved.get("best_score")
        self.since_best = int(saved.get("since_best", 0))
        self.stopped_early_at, self.stop_reason = saved.get("stopped_early_at"), saved.get("stop_reason")
        self.weights = None
        if self.best_step is not None and saved_weights.is_file():
            self.weights = torch.load(saved_weights, map_location="cpu", weights_only=True)

    def recover(self, saved: dict[str, Any] | None) -> None:
        """The curve of a run whose checkpoint was saved from its final trainer state (a crash after the last
        step: no callback ran), read from that state's ``selection.json``."""
        if saved and not self.curve:
            self.load_state(saved, Path("/nonexistent"))

    def save_weights(self, path: Path) -> None:
        """Save the kept weights (see ``weights_file``), if any."""
        if self.weights is not None:
            torch.save(self.weights, path)


# A function of (step, model) that evaluates the model and returns (score, other values of the curve).
Validate = Callable[[int, Any], tuple[float | None, dict[str, Any]]]
SELECTION_STATE_FILE = "selection.json"


# A function of the latest curve point that says why training must stop now, or None.
StopRule = Callable[[dict[str, Any]], str | None]


def selection_callback(
    best: BestWeights,
    eval_every_steps: int,
    validate: Validate,
    at_start: bool,
    stop_rule: StopRule | None = None,
):
    """A trainer callback that evaluates with ``validate`` every ``eval_every_steps`` optimizer steps and at the
    last step (and before the first with ``at_start``, where the starting model is step 0), offers each score
    to ``best``, stops training when its patience runs out or ``stop_rule`` says so, and puts the best weights
    back at the end."""
    from transformers import TrainerCallback

    class SelectionCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step > 0:  # resumed: the selection saved with the trainer state goes on
                checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                saved = checkpoint / SELECTION_STATE_FILE
                if saved.is_file():
                    best.load_state(json.loads(saved.read_text()), weights_file(checkpoint, model))
                return
            if at_start and not best.curve:
                self._evaluate(0, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            last = state.global_step >= state.max_steps
            if state.global_step % eval_every_steps == 0 or last:
                self._evaluate(state.global_step, model)
                reason = (
                    f"{best.patience} validations without improvement" if best.patience_exhausted else None
                ) or (stop_rule(best.curve[-1]) if stop_rule else None)
                if reason and not last:
                    best.stopped_early_at, best.stop_reason = state.global_step, reason
                    control.should_training_stop = True
                    # No trainer state at the stop: a crash before the checkpoint is saved resumes from an
                    # earlier state and stops here again, instead of resuming past the stop.
                    control.should_save = False
                if last or control.should_training_stop:
                    best.restore(model)

        def on_save(self, args, state, control, model=None, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not checkpoint.is_dir():
                return
            if state.is_world_process_zero:
                (checkpoint / SELECTION_STATE_FILE).write_text(json.dumps(best.state(), default=str))
            if state.is_world_process_zero or is_sharded(model):
                best.save_weights(weights_file(checkpoint, model))

        def _evaluate(self, step: int, model) -> None:
            score, values = validate(step, model)
            best.offer(step, score, model, **values)

    return SelectionCallback()
