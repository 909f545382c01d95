"""Reading a one-file JSON Lines benchmark from any of its three sources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rd_pipeline.benchmarks.hub import hub_source, read_hub
from rd_pipeline.benchmarks.records import Record, read_jsonl, resolve_file

SAMPLES = Path(__file__).parent / "samples"


def read_jsonl_source(
    benchmark: str,
    source: str,
    path: str | None,
    *,
    file_name: str,
    sample_file: str,
    hub_id: str,
    hub_split: str,
) -> tuple[Iterator[Record], str]:
    """The records of the built-in sample, a local file (or a directory holding ``file_name``), or the hub split,
    and a description of where they came from (used in error messages)."""
    if source == "builtin":
        file = SAMPLES / sample_file
        return read_jsonl(file), str(file)
    if source == "local":
        if path is None:
            raise ValueError(f"{benchmark}: source 'local' needs a path")
        file = resolve_file(path, file_name)
        return read_jsonl(file), str(file)
    if source == "hub":
        return read_hub(hub_id, None, hub_split), hub_source(hub_id, None, hub_split)
    raise ValueError(f"{benchmark}: unknown source {source!r}")
