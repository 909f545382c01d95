"""Stable hashes: of JSON values (data versions, config sections) and of files (checkpoint digests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def short_hash(value: Any) -> str:
    """A short (16 hex digits) stable hash of a JSON-serializable value: keys sorted, other objects as str()."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The full sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
