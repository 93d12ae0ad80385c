"""DuckDB over the lake: one view per table, so every asset's data is a SQL name."""

from __future__ import annotations

import duckdb
import polars as pl

from mella_assets.lib.lake import LakeStore


def open_catalog(store: LakeStore) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection with a view per lake table (named after its asset).

    In-process and per caller on purpose: there is no shared writable database file, so parallel partitions
    never wait on a lock (DESIGN §6).
    """
    connection = duckdb.connect(":memory:")
    for name, pattern in store.tables().items():
        escaped = pattern.replace("'", "''")
        # The `language` column is stored in every file, so Hive partition parsing is off (no duplicate column).
        connection.execute(
            f'CREATE VIEW "{name}" AS SELECT * FROM '
            f"read_parquet('{escaped}', hive_partitioning = false, union_by_name = true)"
        )
    return connection


def run_sql(store: LakeStore, query: str) -> pl.DataFrame:
    """Run one SQL query over the lake's tables and return the result."""
    with open_catalog(store) as connection:
        return connection.execute(query).pl()
