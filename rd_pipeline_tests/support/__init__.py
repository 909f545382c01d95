"""Test servers and shared helpers (fault-injecting OpenAI-compatible server, PostgreSQL, the Dagster UI)."""
