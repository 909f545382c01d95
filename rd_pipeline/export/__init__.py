"""Export a trained model asset (``sft_student``, ``rl_student``, ``reward_model``) as a Hugging Face model
folder with a model card written from its lineage, and optionally push it to the hub."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rd_pipeline.config import PipelineConfig
from rd_pipeline.export.card import render_card
from rd_pipeline.export.facts import EXPORTABLE_ASSETS, ExportError, ModelFacts, gather_facts
from rd_pipeline.export.folder import write_model_files
from rd_pipeline.export.push import HubTarget, PushError, hub_target, push_folder
from rd_pipeline.steps.checkpoints import LINEAGE_FILE

__all__ = [
    "EXPORTABLE_ASSETS",
    "ExportError",
    "Exported",
    "HubTarget",
    "PushError",
    "export_model",
    "hub_target",
    "push_folder",
]


@dataclass(frozen=True)
class Exported:
    """An exported folder and what it was made from."""

    folder: Path
    facts: ModelFacts


def export_model(config: PipelineConfig, asset: str, target: Path) -> Exported:
    """Write the latest version of ``asset`` into ``target`` (which must not exist or be empty): the model,
    tokenizer and chat template, ``README.md`` (the card) and ``lineage.json``. The folder appears complete or
    not at all."""
    target = Path(target).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"--to {target} exists and is not an empty directory; choose a new folder")
    facts = gather_facts(config, asset)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_model_files(facts.checkpoint, staging, asset, config.rd_home(), config.student.ref)
        shutil.copy2(facts.checkpoint / LINEAGE_FILE, staging / LINEAGE_FILE)
        render_card(facts).save(staging / "README.md")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(target, facts)
