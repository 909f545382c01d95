"""The error raised for benchmark data that cannot be used."""

from __future__ import annotations


class BenchmarkDataError(ValueError):
    """Benchmark data that cannot be used; the message, one line, names the file, the line and the field (or the
    benchmark and the config field)."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {' '.join(message.split())}")
        self.source = source
        self.line = line
