"""Trainer state saved while a checkpoint trains, so that a re-run after a crash resumes instead of starting over.

The state lives next to the checkpoint being trained (``models/<asset>/<version>.trainer/checkpoint-N``, written by
the trainer every ``save_every_steps`` steps and after the last), with the resume key of the run that saved it: a
run resumes only state saved under its own key (same base, settings, seed and data).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

RESUME_KEY_FILE = "resume-key.json"
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


def trainer_state_dir(out_dir: Path) -> Path:
    """The trainer's output_dir, where it saves its state while training ``out_dir``: next to it, named after
    it without a staging ``.partial`` suffix (``models/sft_student/<version>.trainer``). It outlives a crash, so
    a re-run of the same version resumes from it, and is deleted once the final checkpoint is saved."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name.removesuffix(".partial") + ".trainer")


def saved_state(trainer_dir: Path) -> tuple[Path, int] | None:
    """The latest complete trainer state in ``trainer_dir`` and its step: the ``checkpoint-N`` with the highest
    N that holds ``trainer_state.json``, which the trainer writes after the weights, optimizer and RNG state."""
    steps = [
        (int(match.group(1)), path)
        for path in Path(trainer_dir).glob("checkpoint-*")
        if (match := _CHECKPOINT_NAME.fullmatch(path.name)) and (path / "trainer_state.json").is_file()
    ]
    if not steps:
        return None
    step, path = max(steps)
    return path, step


def prepare_trainer_dir(trainer_dir: Path, resume_key: str) -> None:
    """Keep ``trainer_dir``'s saved state only when it was saved by a run with this ``resume_key`` (the same
    base, settings, seed and data); otherwise, or when it has none, start it empty. Also drops checkpoints a
    crash left half-written (newer than the latest complete one). Run on the main process only."""
    trainer_dir = Path(trainer_dir)
    key_file = trainer_dir / RESUME_KEY_FILE
    try:
        kept = json.loads(key_file.read_text()).get("resume_key") == resume_key
    except (OSError, ValueError, AttributeError):
        kept = False
    if not kept:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    trainer_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps({"resume_key": resume_key}))
    latest = saved_state(trainer_dir)
    latest_step = latest[1] if latest else -1
    for path in trainer_dir.glob("checkpoint-*"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and int(match.group(1)) > latest_step:
            shutil.rmtree(path, ignore_errors=True)


def finished_state(checkpoint: Path) -> bool:
    """Whether the trainer state in ``checkpoint`` was saved after the last step."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def drop_if_nothing_saved(trainer_dir: Path) -> None:
    """After a failure, remove the trainer's state directory if it holds no state to resume from (the trainer
    creates it when it is built, before a check of its data can fail). Main process only."""
    from accelerate import PartialState

    if PartialState().is_main_process and saved_state(trainer_dir) is None:
        shutil.rmtree(trainer_dir, ignore_errors=True)
