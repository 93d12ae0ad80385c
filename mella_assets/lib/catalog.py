"""DuckDB over the lake: one view per table, so every asset's data is a SQL name, plus views for common questions.

Derived views (created when the tables they read exist):

- ``funnel_by_language``: per language and pipeline stage, rows kept and rows rejected (from the ``*_rejects``
  tables), in pipeline order (``step``).
- ``rejects_by_reason``: per language, stage (the rejects table) and reason code, the rejected rows.
- ``pairs_per_domain``: per language and web domain, dataset records by source kind and distinct images.
- ``split_sizes``: per language, source and split, records, distinct images and image clusters.
"""

from __future__ import annotations

import duckdb
import polars as pl

from mella_assets.lib.lake import LakeStore
from mella_assets.tables import MELLA_DATASET, RAW_CRAWL, TABLES, funnel_tables, rejects_table

# (step, stage, kept table, rejects table or None): the order rows flow through the pipeline — the registry's
# per-language tables from the first filter to the dataset, in graph order (tests/test_tables.py keeps the
# registry's order a topological order of the asset graph).
FUNNEL_STAGES = tuple(
    (step, table.name, table.name, rejects.name if (rejects := rejects_table(table.name)) else None)
    for step, table in enumerate(funnel_tables(), start=1)
)
DERIVED_VIEWS = ("funnel_by_language", "rejects_by_reason", "pairs_per_domain", "split_sizes")


def _funnel_sql(tables: set[str]) -> str | None:
    parts = []
    if RAW_CRAWL.name in tables:
        parts.append(
            "SELECT language, 0 AS step, 'raw_crawl_images' AS stage, sum(len(images)) AS kept, 0 AS rejected "
            "FROM raw_crawl GROUP BY 1"
        )
    for step, stage, kept, rejects in FUNNEL_STAGES:
        if kept in tables:
            parts.append(
                f"SELECT language, {step} AS step, '{stage}' AS stage, count(*) AS kept, 0 AS rejected "
                f'FROM "{kept}" GROUP BY 1'
            )
        if rejects and rejects in tables:
            parts.append(
                f"SELECT language, {step} AS step, '{stage}' AS stage, 0 AS kept, count(*) AS rejected "
                f'FROM "{rejects}" GROUP BY 1'
            )
    if not parts:
        return None
    union = "\n  UNION ALL ".join(parts)
    return (
        "SELECT language, step, stage, sum(kept)::BIGINT AS kept, sum(rejected)::BIGINT AS rejected\n"
        f"FROM (\n  {union}\n) GROUP BY ALL ORDER BY language, step"
    )


def _rejects_sql(tables: set[str]) -> str | None:
    names = sorted(t for t in tables if t in TABLES and TABLES[t].is_rejects)
    if not names:
        return None
    union = "\n  UNION ALL ".join(f"SELECT language, '{name}' AS stage, reason FROM \"{name}\"" for name in names)
    return (
        f"SELECT language, stage, reason, count(*)::BIGINT AS rows\nFROM (\n  {union}\n) "
        "GROUP BY ALL ORDER BY language, stage, rows DESC, reason"
    )


def _derived_views(tables: set[str]) -> dict[str, str]:
    views = {"funnel_by_language": _funnel_sql(tables), "rejects_by_reason": _rejects_sql(tables)}
    if MELLA_DATASET.name in tables:
        views["pairs_per_domain"] = (
            "SELECT language, coalesce(domain, '(unknown)') AS domain, "
            "count(*) FILTER (source = 'know')::BIGINT AS know, count(*) FILTER (source = 'ling')::BIGINT AS ling, "
            "count(*)::BIGINT AS records, count(DISTINCT image_sha256)::BIGINT AS images "
            "FROM mella_dataset GROUP BY ALL ORDER BY language, records DESC, domain"
        )
        views["split_sizes"] = (
            "SELECT language, source, split, count(*)::BIGINT AS records, "
            "count(DISTINCT image_sha256)::BIGINT AS images, count(DISTINCT split_group)::BIGINT AS clusters "
            "FROM mella_dataset GROUP BY ALL ORDER BY language, source, split"
        )
    return {name: sql for name, sql in views.items() if sql}


def open_catalog(store: LakeStore) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection with a view per lake table (named after its asset) and the derived views.

    In-process and per caller on purpose: there is no shared writable database file, so parallel partitions
    never wait on a lock (docs/architecture.md, "Storage layout").
    """
    connection = duckdb.connect(":memory:")
    store.configure_duckdb(connection)  # an S3 lake's credentials and endpoint (httpfs)
    tables = store.tables()
    for name, pattern in tables.items():
        escaped = pattern.replace("'", "''")
        # The `language` column is stored in every file, so Hive partition parsing is off (no duplicate column).
        connection.execute(
            f'CREATE VIEW "{name}" AS SELECT * FROM '
            f"read_parquet('{escaped}', hive_partitioning = false, union_by_name = true)"
        )
    for name, sql in _derived_views(set(tables) - set(DERIVED_VIEWS)).items():
        try:
            connection.execute(f'CREATE VIEW "{name}" AS {sql}')
        except duckdb.Error:
            # A table written by an older version may lack a column a view needs; its own view still works.
            continue
    return connection


def run_sql(store: LakeStore, query: str) -> pl.DataFrame:
    """Run one SQL query over the lake's tables and return the result."""
    with open_catalog(store) as connection:
        return connection.execute(query).pl()
