"""Reading benchmark files record by record, with the line number of each record, and checking fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rd_pipeline.benchmarks.errors import BenchmarkDataError

Record = tuple[int, dict[str, Any]]  # (1-based line number, record)


EMPTY_FILE = "empty file (no records)"


def read_jsonl(path: Path) -> Iterator[Record]:
    """Each non-blank line of a JSON Lines file as an object, with its line number; an empty file is an error."""
    source = str(path)
    if not path.is_file():
        raise BenchmarkDataError(source, None, "file not found")
    records = 0
    with path.open("rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, source, number, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BenchmarkDataError(source, number, f"invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                message = f"expected a JSON object, got {type(record).__name__}"
                raise BenchmarkDataError(source, number, message)
            records += 1
            yield number, record
    if not records:
        raise BenchmarkDataError(source, None, EMPTY_FILE)


def read_json_array(path: Path) -> Iterator[Record]:
    """Each element of a file holding one JSON array of objects, with the line its element starts on; an empty
    file or array is an error."""
    source = str(path)
    if not path.is_file():
        raise BenchmarkDataError(source, None, "file not found")
    text = _decode(path.read_bytes(), source, 1, 0)
    decoder = json.JSONDecoder()
    index = _skip_space(text, 0)
    if index >= len(text):
        raise BenchmarkDataError(source, None, EMPTY_FILE)
    if text[index] != "[":
        raise BenchmarkDataError(source, _line_of(text, index), "expected a JSON array of objects")
    index = _skip_space(text, index + 1)
    if index < len(text) and text[index] == "]":
        raise BenchmarkDataError(source, None, EMPTY_FILE)
    line, counted_to = 1, 0
    while True:
        line += text.count("\n", counted_to, index)
        counted_to = index
        try:
            record, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as error:
            raise BenchmarkDataError(source, error.lineno, f"invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise BenchmarkDataError(source, line, f"expected a JSON object, got {type(record).__name__}")
        yield line, record
        index = _skip_space(text, index)
        if index < len(text) and text[index] == ",":
            index = _skip_space(text, index + 1)
            continue
        if index < len(text) and text[index] == "]":
            if _skip_space(text, index + 1) != len(text):
                raise BenchmarkDataError(source, _line_of(text, index + 1), "invalid JSON (extra data)")
            return
        raise BenchmarkDataError(source, _line_of(text, index), "invalid JSON (expected ',' or ']')")


def _decode(data: bytes, source: str, first_line: int, offset: int) -> str:
    """``data`` (a file, or one line of it starting at byte ``offset``) as UTF-8 text, without a byte-order mark;
    bytes that are not UTF-8 raise an error naming their line and byte offset in the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        message = f"not UTF-8 text (byte offset {offset + error.start}: 0x{data[error.start]:02x})"
        raise BenchmarkDataError(source, line, message) from None
    return text.removeprefix("\ufeff") if offset == 0 else text


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def field_str(record: dict[str, Any], name: str, source: str, line: int, *, allow_empty: bool = False) -> str:
    """The string field ``name`` of a record; missing, non-string or empty values raise."""
    if name not in record:
        raise BenchmarkDataError(source, line, f"missing field '{name}'")
    value = record[name]
    if not isinstance(value, str):
        raise BenchmarkDataError(source, line, f"field '{name}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BenchmarkDataError(source, line, f"field '{name}' is empty")
    return value


def field_int(record: dict[str, Any], name: str, source: str, line: int) -> int:
    """The integer field ``name`` of a record (booleans are rejected)."""
    if name not in record:
        raise BenchmarkDataError(source, line, f"missing field '{name}'")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"field '{name}' must be an integer, got {type(value).__name__}"
        raise BenchmarkDataError(source, line, message)
    return value


def field_str_list(record: dict[str, Any], name: str, source: str, line: int) -> list[str]:
    """The list-of-strings field ``name`` of a record."""
    if name not in record:
        raise BenchmarkDataError(source, line, f"missing field '{name}'")
    value = record[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchmarkDataError(source, line, f"field '{name}' must be a list of strings")
    return value


def short_hash(*parts: str, length: int = 12) -> str:
    """A short stable hex digest of the given strings."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) derived from the given strings."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def resolve_file(path: str | Path, default_name: str) -> Path:
    """``path`` itself if it is a file, else ``default_name`` inside the directory ``path``."""
    path = Path(path)
    if path.is_dir():
        return path / default_name
    return path
