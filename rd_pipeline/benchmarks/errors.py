"""The error raised for benchmark data that cannot be used."""

from __future__ import annotations


class BenchmarkDataError(ValueError):
    """A benchmark file or record is malformed; the message names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
