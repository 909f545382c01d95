"""Reading a benchmark from the Hugging Face hub through ``datasets``, record by record."""

from __future__ import annotations

from collections.abc import Iterator

from rd_pipeline.benchmarks.errors import BenchmarkDataError
from rd_pipeline.benchmarks.records import Record


def hub_source(dataset_id: str, config: str | None, split: str) -> str:
    """How a hub split is named in error messages."""
    return f"hub:{dataset_id}" + (f"/{config}" if config else "") + f"[{split}]"


def read_hub(dataset_id: str, config: str | None, split: str) -> Iterator[Record]:
    """Each row of a hub split as a plain dict, numbered from 1 like file lines."""
    import datasets

    try:
        rows = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # network, auth or format failures all surface as one readable error
        raise BenchmarkDataError(
            hub_source(dataset_id, config, split), None, f"cannot load from the hub: {error}"
        ) from error
    if len(rows) == 0:
        raise BenchmarkDataError(hub_source(dataset_id, config, split), None, "empty split (no records)")
    for number, row in enumerate(rows, start=1):
        yield number, dict(row)


def read_hub_json(dataset_id: str, filename: str) -> Iterator[Record]:
    """Each record of one JSON file stored in a hub dataset repository."""
    import datasets

    url = f"hf://datasets/{dataset_id}/{filename}"
    try:
        rows = datasets.load_dataset("json", data_files=url, split="train")
    except Exception as error:  # network, auth or format failures all surface as one readable error
        raise BenchmarkDataError(url, None, f"cannot load from the hub: {error}") from error
    for number, row in enumerate(rows, start=1):
        yield number, dict(row)
