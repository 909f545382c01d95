"""The DuckDB store: table schemas, idempotent replacement of one benchmark partition, reads.

The only module with DuckDB SQL (the generation journal keeps its own SQLite). Connections are opened per operation
and closed at once, so no connection is held while models generate or train; a writer that finds the file locked by
another process waits and retries.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from rd_pipeline.locks import held_lock

STORE_FILE = "rd.duckdb"


def store_path(rd_home: Path) -> Path:
    """The DuckDB file of the state directory ``rd_home``."""
    return Path(rd_home) / STORE_FILE


def _response_columns(version_column: str) -> dict[str, str]:
    """Sampled responses: one row per (prompt, temperature, sample index), with the version of the model."""
    return {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "response": "VARCHAR",
        "input_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        version_column: "VARCHAR",
    }


def _validation_columns(version_column: str) -> dict[str, str]:
    """A validation curve: the greedy answers to a stage's held-out prompts at one step, for one benchmark."""
    return {
        "benchmark": "VARCHAR",
        version_column: "VARCHAR",
        "step": "INTEGER",
        "agreement": "DOUBLE",  # greedy answers that equal the vote label, over labelled prompts
        "agreement_n": "INTEGER",
        "gold_accuracy": "DOUBLE",  # a monitor only, never used for selection
        "gold_n": "INTEGER",
        "mean_reward": "DOUBLE",  # the reward model's raw score (RL only)
        "mean_length": "DOUBLE",
        "kl": "DOUBLE",  # mean training KL to the SFT student since the previous validation (RL only)
        "prompts": "INTEGER",
        "selected": "BOOLEAN",
    }


# Every table has a `benchmark` column (the partition key) except where noted.
SCHEMAS: dict[str, dict[str, str]] = {
    "benchmark_prompts": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "split": "VARCHAR",
        "question": "VARCHAR",
        "prompt": "VARCHAR",
        "gold": "VARCHAR",
        "reference": "VARCHAR",
        "meta": "VARCHAR",
        "data_version": "VARCHAR",
    },
    "teacher_responses": _response_columns("teacher_version"),
    "pseudo_labels": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "extracted_answer": "VARCHAR",
        "prompt_answer": "VARCHAR",
        "vote_share": "DOUBLE",
        "valid_votes": "INTEGER",
        "judge_score": "DOUBLE",
        "prompt_labelled": "BOOLEAN",
        "good": "BOOLEAN",
        "teacher_version": "VARCHAR",
        "label_version": "VARCHAR",
    },
    "student_responses": _response_columns("student_version"),
    "reward_labels": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "source": "VARCHAR",
        "temperature": "DOUBLE",
        "sample_index": "INTEGER",
        "response": "VARCHAR",
        "good": "BOOLEAN",
        "judge_score": "DOUBLE",
        "label_version": "VARCHAR",
    },
    "reward_pairs": {
        "benchmark": "VARCHAR",
        "prompt_id": "VARCHAR",
        "prompt": "VARCHAR",
        "chosen": "VARCHAR",
        "rejected": "VARCHAR",
        "margin": "DOUBLE",
        "split": "VARCHAR",
        "label_version": "VARCHAR",
    },
    "eval_responses": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "model_version": "VARCHAR",
        "prompt_id": "VARCHAR",
        "response": "VARCHAR",
        "correct": "BOOLEAN",
        "preference": "DOUBLE",
        "reward_score": "DOUBLE",
    },
    "eval_scores": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "model_version": "VARCHAR",
        "metric": "VARCHAR",
        "value": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "n": "INTEGER",
        "eval_key": "VARCHAR",  # the hash of everything the score depends on (rd_pipeline.evaluation.key)
        "eval_key_parts": "VARCHAR",  # JSON: those parts
    },
    "eval_breakdown": {
        "benchmark": "VARCHAR",
        "model_role": "VARCHAR",
        "group_kind": "VARCHAR",
        "group": "VARCHAR",
        "value": "DOUBLE",
        "n": "INTEGER",
    },
    # Validation curves: one row per validation and benchmark of an sft_student version (step 0 is the base
    # student) and of an rl_student version (step 0 is the SFT student).
    "sft_validation": _validation_columns("sft_version"),
    "rl_validation": _validation_columns("rl_version"),
    # RL rollouts: one row per completion sampled in training (as many per step as rl.log_rollouts keeps).
    "rl_rollouts": {
        "benchmark": "VARCHAR",
        "rl_version": "VARCHAR",
        "step": "INTEGER",
        "prompt_id": "VARCHAR",
        "completion": "VARCHAR",
        "reward_model": "DOUBLE",  # standardised reward-model score
        "vote_agreement": "DOUBLE",
        "reward": "DOUBLE",  # the weighted sum of the sources
        "advantage": "DOUBLE",
        "length": "INTEGER",
        "truncated": "BOOLEAN",
    },
    "generation_usage": {
        "benchmark": "VARCHAR",
        "asset": "VARCHAR",
        "run_id": "VARCHAR",
        "model_version": "VARCHAR",
        "samples_generated": "INTEGER",
        "samples_from_journal": "INTEGER",
        "input_tokens": "BIGINT",
        "output_tokens": "BIGINT",
        "cost_usd": "DOUBLE",
        "recorded_at": "TIMESTAMP",
    },
    "asset_versions": {
        "benchmark": "VARCHAR",  # '' for unpartitioned assets
        "asset": "VARCHAR",
        "data_version": "VARCHAR",
        "run_id": "VARCHAR",
        "teacher_version": "VARCHAR",
        "upstream": "VARCHAR",  # JSON: upstream asset/partition -> {data_version, run_id}
        "recorded_at": "TIMESTAMP",
    },
    # Not partitioned: money spent per API endpoint and model, one row per answered request (imported from
    # the journals, where each is written with the samples it paid for), and the resets of that spend.
    "api_spend": {
        "endpoint": "VARCHAR",
        "model": "VARCHAR",
        "entry_id": "VARCHAR",
        "label": "VARCHAR",  # which step and run spent it
        "input_tokens": "BIGINT",
        "output_tokens": "BIGINT",
        "cost_usd": "DOUBLE",
        "recorded_at": "TIMESTAMP",
    },
    "api_spend_resets": {
        "endpoint": "VARCHAR",
        "model": "VARCHAR",
        "spent_usd": "DOUBLE",  # what had been spent since the previous reset
        "reset_at": "TIMESTAMP",
    },
}

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}
_ARROW_SCHEMAS = {
    table: pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in columns.items()])
    for table, columns in SCHEMAS.items()
}
_LOCK_WAIT_S = 300.0


class StoreError(RuntimeError):
    """A store operation that cannot succeed (unknown table, wrong columns)."""


class StoreCorruptError(StoreError):
    """The database file cannot be read as a DuckDB database (damaged, truncated, or not DuckDB at all)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{self.path} is not a readable DuckDB database ({reason}); nothing was written to it. "
            "`rd rebuild` moves it aside and re-makes every table from the journal and the checkpoints"
        )


@dataclass
class PartitionWrite:
    """Rows that replace one partition of a table (``benchmark`` plus optional extra column matches)."""

    table: str
    benchmark: str
    rows: pa.Table
    match: dict[str, str] = field(default_factory=dict)


@dataclass
class StagedWrites:
    """A step's writes, held back until its checks pass, then committed together by ``Store.commit``."""

    replacements: list[PartitionWrite] = field(default_factory=list)
    appends: list[tuple[str, pa.Table]] = field(default_factory=list)

    def rows(self, table: str) -> int:
        """How many rows are staged for ``table``."""
        return sum(w.rows.num_rows for w in self.replacements if w.table == table) + sum(
            data.num_rows for name, data in self.appends if name == table
        )

    def __bool__(self) -> bool:
        return bool(self.replacements or self.appends)


def _is_lock_conflict(error: duckdb.Error) -> bool:
    """Another connection holds the file: another process's lock, or (in this process) a connection opened in the
    other mode, read-only or read-write, which DuckDB refuses to mix until it is closed."""
    text = str(error).lower()
    return (
        "lock" in text
        or "conflicting" in text
        or "being used by another process" in text
        or "different configuration" in text
    )


_CORRUPTION_MARKERS = ("not a valid duckdb database", "could not read enough bytes", "corrupt", "checksum")


def _is_corruption(error: duckdb.Error) -> bool:
    text = str(error).lower()
    return any(marker in text for marker in _CORRUPTION_MARKERS)


def _reason(error: BaseException) -> str:
    """The first line of a DuckDB error, without the quoted path (the message names the file already)."""
    line = str(error).splitlines()[0].strip()
    if "not a valid duckdb database" in line.lower():
        return "not a DuckDB database file"
    return re.sub(r'\s*(from )?(file )?"[^"]*"', "", line.removeprefix("IO Error: "))


class Store:
    """Tables in one DuckDB file, one short-lived connection per operation."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _create_once(self) -> None:
        """Create the database file under a file lock, so that processes starting together never open a
        half-written file."""
        with held_lock(self.path.with_name(f".{self.path.name}.create.lock")):
            if not self.path.exists():
                # Built aside and renamed into place: other processes see no file or a complete one.
                staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
                duckdb.connect(str(staging)).close()
                os.replace(staging, self.path)

    def _run(self, action, read_only: bool = False) -> Any:
        """Run ``action(connection)`` with a fresh connection, retrying while another process holds the file.

        ``read_only`` opens a read-only connection: readers write nothing and share the file with other readers;
        like a writer, a reader waits while another process holds it for writing.
        """
        if not read_only and not self.path.exists():
            self._create_once()
        deadline = time.monotonic() + _LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                if read_only and not self.path.exists():
                    return action(None)
                connection = duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as error:
                if _is_corruption(error):
                    raise StoreCorruptError(self.path, _reason(error)) from error
                if not _is_lock_conflict(error) or time.monotonic() > deadline:
                    raise
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 2.0)
                continue
            try:
                return action(connection)
            except duckdb.Error as error:
                if _is_corruption(error):
                    raise StoreCorruptError(self.path, _reason(error)) from error
                raise
            finally:
                connection.close()

    def verify(self) -> list[str]:
        """Open the file and read every table in full, so that a damaged file fails before any work starts.

        Returns the table names (none when the file does not exist yet); raises ``StoreCorruptError``.
        """

        def check(connection: duckdb.DuckDBPyConnection | None) -> list[str]:
            if connection is None:
                return []
            listing = connection.execute("SELECT table_name FROM information_schema.tables").fetchall()
            tables = [row[0] for row in listing]
            for table in tables:  # hashing every column reads every block (a row count reads none)
                connection.execute(f'SELECT bit_xor(hash(*COLUMNS(*))) FROM "{table}"').fetchone()
            return tables

        return self._run(check, read_only=True)

    @staticmethod
    def _ensure_table(connection: duckdb.DuckDBPyConnection, table: str) -> None:
        """Create ``table`` if missing, and add the columns a table made by an older release lacks (NULL in
        its rows)."""
        columns = ", ".join(f'"{name}" {kind}' for name, kind in SCHEMAS[table].items())
        connection.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({columns})')
        present = {
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
            ).fetchall()
        }
        for name, kind in SCHEMAS[table].items():
            if name not in present:
                connection.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {kind}')

    def _arrow(self, table: str, rows: Sequence[dict[str, Any]] | pa.Table) -> pa.Table:
        if table not in SCHEMAS:
            raise StoreError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        names = list(SCHEMAS[table])
        if isinstance(rows, pa.Table):
            missing = set(names) - set(rows.column_names)
            if missing:
                raise StoreError(f"rows for {table} lack columns {sorted(missing)}")
            return rows.select(names)
        required = set(names)
        if not all(row.keys() >= required for row in rows):
            number, row = next((n, r) for n, r in enumerate(rows) if not r.keys() >= required)
            raise StoreError(f"row {number} for {table} lacks columns {sorted(required - set(row))}")
        return pa.Table.from_pylist(list(rows), schema=_ARROW_SCHEMAS[table])

    def replace_partition(
        self, table: str, benchmark: str, rows: Sequence[dict[str, Any]] | pa.Table, **match: str
    ) -> int:
        """Atomically replace every row of ``table`` for ``benchmark`` (and the extra ``match`` columns) with ``rows``.

        Idempotent: writing the same rows twice leaves one copy. Returns the number of rows written.
        """
        staged = StagedWrites()
        written = self.stage_partition(staged, table, benchmark, rows, **match)
        self.commit(staged)
        return written

    def stage_partition(
        self,
        staged: StagedWrites,
        table: str,
        benchmark: str,
        rows: Sequence[dict[str, Any]] | pa.Table,
        **match: str,
    ) -> int:
        """Add the replacement of one partition to ``staged`` (validated now, written by ``commit``)."""
        data = self._arrow(table, rows)
        staged.replacements.append(PartitionWrite(table, benchmark, data, dict(match)))
        return data.num_rows

    def stage_append(self, staged: StagedWrites, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Add rows to append to ``staged`` (validated now, written by ``commit``)."""
        staged.appends.append((table, self._arrow(table, rows)))

    def commit(self, staged: StagedWrites) -> None:
        """Write every staged replacement and append in one transaction: all of them become visible, or none."""

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            for table in {w.table for w in staged.replacements} | {name for name, _ in staged.appends}:
                self._ensure_table(connection, table)
            connection.execute("BEGIN TRANSACTION")
            try:
                for replacement in staged.replacements:
                    self._replace_rows(connection, replacement)
                for table, data in staged.appends:
                    self._insert(connection, table, data)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        if staged:
            self._run(write)

    @staticmethod
    def _replace_rows(connection: duckdb.DuckDBPyConnection, write: PartitionWrite) -> None:
        conditions = " AND ".join(['"benchmark" = ?'] + [f'"{column}" = ?' for column in write.match])
        parameters = [write.benchmark, *write.match.values()]
        connection.execute(f'DELETE FROM "{write.table}" WHERE {conditions}', parameters)
        Store._insert(connection, write.table, write.rows)

    @staticmethod
    def _insert(connection: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
        if not data.num_rows:
            return
        connection.register("incoming_rows", data)  # after a failure the connection is closed, dropping it
        column_list = ", ".join(f'"{name}"' for name in SCHEMAS[table])
        connection.execute(f'INSERT INTO "{table}" ({column_list}) SELECT {column_list} FROM incoming_rows')
        connection.unregister("incoming_rows")

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows (used for usage accounting and version records)."""
        data = self._arrow(table, rows)

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            self._ensure_table(connection, table)
            connection.register("incoming_rows", data)
            connection.execute(f'INSERT INTO "{table}" SELECT * FROM incoming_rows')
            connection.unregister("incoming_rows")

        self._run(write)

    def read(
        self, table: str, benchmark: str | None = None, order_by: str | None = None, **match: str
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` (optionally one benchmark and exact column matches) as dicts; [] if it does not exist."""
        if table not in SCHEMAS:
            raise StoreError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        filters = dict(match)
        if benchmark is not None:
            filters = {"benchmark": benchmark, **filters}
        where = " AND ".join(f'"{column}" = ?' for column in filters)
        order = order_by or ", ".join(f'"{c}"' for c in list(SCHEMAS[table])[:4])
        sql = f'SELECT * FROM "{table}"' + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"

        def query(connection: duckdb.DuckDBPyConnection | None) -> list[dict[str, Any]]:
            if connection is None or not self._has_table(connection, table):
                return []
            result = connection.execute(sql, list(filters.values()))
            names = [d[0] for d in result.description]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

        return self._run(query, read_only=True)

    def count(self, table: str, benchmark: str | None = None) -> int:
        def query(connection: duckdb.DuckDBPyConnection | None) -> int:
            if connection is None or not self._has_table(connection, table):
                return 0
            if benchmark is None:
                return connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            return connection.execute(
                f'SELECT count(*) FROM "{table}" WHERE benchmark = ?', [benchmark]
            ).fetchone()[0]

        return self._run(query, read_only=True)

    @staticmethod
    def _has_table(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(
            connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
            ).fetchone()[0]
        )

    def latest_version(self, asset: str, benchmark: str = "") -> dict[str, Any] | None:
        """The most recent version record of an asset partition, or None."""
        rows = self.read("asset_versions", benchmark=benchmark, asset=asset, order_by="recorded_at DESC")
        return rows[0] if rows else None

    def import_api_spend(self, rows: Sequence[dict[str, Any]]) -> int:
        """Add spend rows whose ``entry_id`` is not recorded yet (importing twice counts once). Returns how many."""
        data = self._arrow("api_spend", rows)

        def write(connection: duckdb.DuckDBPyConnection) -> int:
            self._ensure_table(connection, "api_spend")
            connection.register("incoming_spend", data)
            try:
                before = connection.execute("SELECT count(*) FROM api_spend").fetchall()[0][0]
                connection.execute(
                    "INSERT INTO api_spend SELECT DISTINCT ON (entry_id) * FROM incoming_spend WHERE entry_id NOT "
                    "IN (SELECT entry_id FROM api_spend)"
                )
                return connection.execute("SELECT count(*) FROM api_spend").fetchall()[0][0] - before
            finally:
                connection.unregister("incoming_spend")

        return self._run(write) if data.num_rows else 0

    def api_spend(self) -> list[dict[str, Any]]:
        """Per endpoint and model: ``spent_usd`` and ``requests`` since the last reset (what a budget counts),
        ``total_usd`` over all time and ``last_reset`` (None if never)."""

        def query(connection: duckdb.DuckDBPyConnection | None) -> list[dict[str, Any]]:
            if connection is None or not self._has_table(connection, "api_spend"):
                return []
            resets = (
                "SELECT endpoint, model, max(reset_at) AS reset_at FROM api_spend_resets GROUP BY endpoint, model"
                if self._has_table(connection, "api_spend_resets")
                else "SELECT NULL::VARCHAR AS endpoint, NULL::VARCHAR AS model, NULL::TIMESTAMP AS reset_at"
            )
            since_reset = "r.reset_at IS NULL OR s.recorded_at > r.reset_at"
            result = connection.execute(
                f"SELECT s.endpoint, s.model, sum(s.cost_usd) FILTER (WHERE {since_reset}) AS spent_usd, "
                f"count(*) FILTER (WHERE {since_reset}) AS requests, sum(s.cost_usd) AS total_usd, "
                f"max(r.reset_at) AS last_reset FROM api_spend s LEFT JOIN ({resets}) r USING (endpoint, model) "
                "GROUP BY s.endpoint, s.model ORDER BY s.endpoint, s.model"
            )
            names = [d[0] for d in result.description]
            return [
                {**dict(zip(names, row, strict=True)), "spent_usd": row[2] or 0.0}
                for row in result.fetchall()
            ]

        return self._run(query, read_only=True)

    def api_spent_usd(self, endpoint: str, model: str) -> float:
        """Money spent on ``model`` at ``endpoint`` since its last reset, over every run."""
        return next(
            (
                row["spent_usd"]
                for row in self.api_spend()
                if (row["endpoint"], row["model"]) == (endpoint, model)
            ),
            0.0,
        )

    def reset_api_spend(self, endpoint: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Start counting spend afresh for every endpoint and model (or only the given ones); the history stays.

        Returns the reset rows written (endpoint, model, what had been spent since the previous reset).
        """
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        resets = [
            {
                "endpoint": row["endpoint"],
                "model": row["model"],
                "spent_usd": row["spent_usd"],
                "reset_at": now,
            }
            for row in self.api_spend()
            if endpoint in (None, row["endpoint"]) and model in (None, row["model"])
        ]
        if resets:
            self.append("api_spend_resets", resets)
        return resets
