"""The API spend ledger in ``rd.duckdb``: what budgets count across runs, and resetting it.

Rows come from the generation journal's spend entries (each counted once, by ``entry_id``); a reset records what
had been spent and starts counting afresh, keeping the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import duckdb


class SpendLedger:
    """The spend methods of ``Store`` (this mixin uses its connection helpers)."""

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
