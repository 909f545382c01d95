"""Checks `rd` makes before a run starts, so that bad input or damaged state fails in one line before the teacher is
observed, a model is loaded or anything is written: the asset and partition names, API keys, benchmark data, and
that ``rd.duckdb`` and the generation journals can be read."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

from rd_pipeline.config import ModelConfig, PipelineConfig
from rd_pipeline.generation.journal import verify_journal
from rd_pipeline.store import Store, store_path


class InputError(ValueError):
    """A command-line argument or setting that cannot work; `rd` exits with status 2."""


def _unknown(kind: str, option: str, names: Sequence[str], known: Sequence[str]) -> None:
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise InputError(f"unknown {kind} {name!r} in {option}{hint}; {kind}s: {', '.join(known)}")


def check_selection(selection: Sequence[str] | None, assets: Sequence[str]) -> None:
    """Every name given to --select is an asset."""
    _unknown("asset", "--select", selection or [], assets)


def check_refresh(refresh: bool, selection: Sequence[str] | None) -> None:
    """--refresh re-evaluates eval_scores: a selection without it would refresh nothing."""
    if refresh and selection is not None and "eval_scores" not in selection:
        raise InputError(
            "--refresh re-evaluates eval_scores, which --select leaves out; add it (--select eval_scores)"
        )


def check_partitions(partitions: Sequence[str] | None, config: PipelineConfig) -> None:
    """Every name given to --partition is a configured benchmark."""
    _unknown("partition", "--partition", partitions or [], config.benchmark_names)


def _api_models(config: PipelineConfig) -> list[tuple[str, ModelConfig]]:
    roles = [
        ("teacher", config.teacher),
        ("judge", config.judge_model),
        ("eval.judge", config.eval_judge_model),
        ("student", config.student),
    ]
    return [(role, model) for role, model in roles if model.backend == "openai" and model.api is not None]


def check_api_keys(config: PipelineConfig) -> None:
    """Each API model whose config names a key variable finds it set (the key itself is never printed)."""
    for role, model in _api_models(config):
        variable = model.api.api_key_env
        if variable and not os.environ.get(variable):
            raise InputError(
                f"{role}.api.api_key_env names ${variable}, which is not set: export {variable}=<your key> "
                "(or set api_key_env: null for a server that needs no key)"
            )


def check_benchmark_data(config: PipelineConfig) -> None:
    """Every configured benchmark's data loads and is large enough (raises ``BenchmarkDataError``)."""
    from rd_pipeline.benchmarks import validate_benchmarks

    validate_benchmarks(config)


def check_state(rd_home: Path) -> None:
    """``rd.duckdb`` and every journal under ``rd_home`` can be read (raises ``StoreCorruptError`` or
    ``JournalCorruptError`` naming the file and what recovers it)."""
    Store(store_path(rd_home)).verify()
    for journal in sorted((Path(rd_home) / "journal").glob("*.sqlite")):
        verify_journal(journal)
