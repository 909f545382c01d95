"""The request journal: every completed sample, keyed by a hash of exactly what produced it.

One SQLite file per generator identity under ``RD_HOME/journal/``. A sample is written (and committed) as soon as it
finishes, so a crash loses at most the samples in flight, and a re-run asks the backend only for keys not yet here.
The key covers the model identity, the messages, the sampling parameters, the seed and the sample index, but not
``n``: asking for more samples later generates only the new indices. Failed requests are never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rd_pipeline.generation.base import Completion, GenerationRequest
from rd_pipeline.hashing import short_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    temperature REAL NOT NULL,
    text TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""
# Money spent on an API request, written in the same transaction as the samples it paid for.
_SPEND_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    entry_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    recorded_at TEXT NOT NULL
)
"""
LOCKS_DIR = "locks"


@dataclass(frozen=True)
class SpendEntry:
    """The cost of one answered API request. ``entry_id`` is unique, so importing it twice counts it once."""

    entry_id: str
    endpoint: str
    model: str
    label: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    recorded_at: str  # ISO 8601, UTC


def lock_path(journal_dir: Path, *parts: str) -> Path:
    """A lock file under ``journal_dir/locks`` named by a hash of ``parts``."""
    return Path(journal_dir) / LOCKS_DIR / f"{short_hash(list(parts))}.lock"


def read_spend(journal_dir: Path) -> list[SpendEntry]:
    """Every spend entry in the journals under ``journal_dir`` (journals of local backends have none)."""
    entries: list[SpendEntry] = []
    for path in sorted(Path(journal_dir).glob("*.sqlite")):
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
            has_spend = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'spend'"
            ).fetchone()[0]
            if has_spend:
                rows = connection.execute(f"SELECT {', '.join(SpendEntry.__annotations__)} FROM spend")
                entries.extend(SpendEntry(*row) for row in rows)
    return entries


class JournalCorruptError(RuntimeError):
    """A journal file that SQLite cannot read (damaged, truncated, or not a journal)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{self.path} is not a readable generation journal ({reason}). Move it aside "
            f"(mv {self.path} {self.path}.damaged) and re-run: the samples it held are generated again, and the "
            "tables in rd.duckdb stay as they are"
        )


def verify_journal(path: Path) -> None:
    """Read every page of a journal file (SQLite quick_check); raise ``JournalCorruptError`` if it is damaged."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as connection:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise JournalCorruptError(path, str(error)) from error
    if result != "ok":
        raise JournalCorruptError(path, str(result).splitlines()[0])


def _open_readable(path: Path) -> sqlite3.Connection:
    """A connection to the journal at ``path``; ``JournalCorruptError`` if the file is not a readable database."""
    connection = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        connection.close()
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            raise
        raise JournalCorruptError(path, str(error)) from error
    return connection


def identity_version(identity: dict[str, str]) -> str:
    """A short hash of a generator identity (names its journal file)."""
    return short_hash(identity)


def sample_key(identity: dict[str, str], request: GenerationRequest, sample_index: int) -> str:
    """The journal key of one sample of one request."""
    params = request.params
    payload = {
        "identity": identity,
        "messages": list(request.messages),
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
        "sample_index": sample_index,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PendingSample:
    """A sample the journal does not have yet; ``position`` is its request's place in the call."""

    key: str
    request: GenerationRequest
    sample_index: int
    position: int


class Journal:
    """Completed samples of one generator, safe for several processes at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = _open_readable(self.path)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(_SCHEMA)
        self._connection.execute(_SPEND_SCHEMA)

    @classmethod
    def for_identity(cls, rd_home: Path, identity: dict[str, str]) -> Journal:
        return cls(Path(rd_home) / "journal" / f"{identity_version(identity)}.sqlite")

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """``key -> (text, input_tokens, output_tokens)`` for the keys already completed."""
        found: dict[str, tuple[str, int, int]] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT key, text, input_tokens, output_tokens FROM completions WHERE key IN ({marks})",
                chunk,
            )
            for key, text, input_tokens, output_tokens in rows:
                found[key] = (text, input_tokens, output_tokens)
        return found

    def record(self, entries: Iterable[tuple[str, Completion]], spend: SpendEntry | None = None) -> None:
        """Persist finished samples, and what they cost, at once (one transaction); a key already present is
        kept as it was."""
        rows = [
            (key, c.request_id, c.sample_index, c.temperature, c.text, c.input_tokens, c.output_tokens)
            for key, c in entries
        ]
        if not rows and spend is None:
            return
        with self._connection:  # a transaction: BEGIN here, COMMIT on success, ROLLBACK on error
            self._connection.execute("BEGIN")
            self._connection.executemany(
                "INSERT OR IGNORE INTO completions (key, request_id, sample_index, temperature, text, input_tokens,"
                " output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if spend is not None:
                values = asdict(spend)
                self._connection.execute(
                    f"INSERT OR IGNORE INTO spend ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )

    def count(self) -> int:
        return self._connection.execute("SELECT count(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self._connection.close()

    def split(
        self, identity: dict[str, str], requests: Sequence[GenerationRequest]
    ) -> tuple[dict[tuple[int, int], Completion], list[PendingSample]]:
        """Partition every (request, sample) into those already journaled and those still to generate.

        Returns ``{(request position, sample index): completion}`` for the journaled ones and the pending list in
        request order.
        """
        wanted = [
            (position, index, sample_key(identity, request, index))
            for position, request in enumerate(requests)
            for index in range(request.params.n)
        ]
        found = self.lookup([key for _, _, key in wanted])
        done: dict[tuple[int, int], Completion] = {}
        pending: list[PendingSample] = []
        for position, index, key in wanted:
            request = requests[position]
            if key in found:
                text, input_tokens, output_tokens = found[key]
                temperature = request.params.temperature
                done[(position, index)] = Completion(
                    request.request_id,
                    index,
                    temperature,
                    text,
                    input_tokens,
                    output_tokens,
                    from_journal=True,
                )
            else:
                pending.append(PendingSample(key, request, index, position))
        return done, pending
