"""The DuckDB store (``RD_HOME/rd.duckdb``): table schemas, the store itself, and the API spend ledger."""

from rd_pipeline.store.database import (
    STORE_FILE,
    PartitionWrite,
    StagedWrites,
    Store,
    StoreCorruptError,
    StoreError,
    store_path,
)
from rd_pipeline.store.schema import SCHEMAS

__all__ = [
    "SCHEMAS",
    "STORE_FILE",
    "PartitionWrite",
    "StagedWrites",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "store_path",
]
