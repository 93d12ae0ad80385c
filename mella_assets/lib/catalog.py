"""DuckDB over the lake: one view per table, so every asset's data is a SQL name, plus views for common questions.

Derived views (created when the tables they read exist):

- ``funnel_by_language``: per language and pipeline stage, rows kept and rows rejected (from the ``*_rejects``
  tables), in pipeline order (``step``).
- ``rejects_by_reason``: per language, stage (the rejects table) and reason code, the rejected rows.
- ``pairs_per_domain``: per language and web domain, dataset records by source kind and distinct images.
- ``split_sizes``: per language, source and split, records, distinct images and image clusters.
- ``yield_by_language``: per language and crawl, the yield funnel from pages to SFT records (:data:`YIELD_STEPS`),
  each step's rows with its ratio to the step before and to the first; what sizes a Common Crawl run
  (:func:`yield_funnel`).

Names: a view is named after its folder under ``tables/`` only when the name is a plain identifier
(:data:`TABLE_NAME`: lowercase letters, digits, underscores); any other folder is skipped with a warning naming it,
and every name that reaches SQL is quoted (:func:`quote_identifier`), so a folder name cannot run SQL.

Shards: a sharded table's view reads the files ``Lake.read`` reads (:func:`current_files`): the shards of the current
``MELLA_SHARDS`` only (a changed count leaves the old count's ``shard=NN`` files behind), and a language's
pre-sharding single file only where it has none of them.

Read-only by default: once the views exist, the connection may read files only under the lake's ``tables/``
(DuckDB ``allowed_directories``, local or ``s3://``) with ``enable_external_access`` off and the configuration
locked (no ``SET`` can undo it, no extension can be installed or loaded), and :func:`run_sql` runs ``SELECT``
statements only (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``PIVOT ... IN (...)`` are ``SELECT`` too): no ``COPY``,
``ATTACH``, ``EXPORT``, ``INSTALL``/``LOAD``, ``SET``, ``CREATE``. ``allow_external=True`` (``mella sql
--allow-external``) gives DuckDB's full power back: any statement, any file, any URL.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import re
from collections.abc import Sequence

import duckdb
import polars as pl

from mella_assets.lib.lake import LakeStore, shard_keys
from mella_assets.settings import load_settings
from mella_assets.tables import (
    ALT_TEXT_PAIRS,
    CC_SELECTION,
    D_KNOW,
    D_LING,
    IMAGES,
    MELLA_DATASET,
    RAW_CRAWL,
    TABLES,
    funnel_tables,
    rejects_table,
)

# (step, stage, kept table, rejects table or None): the order rows flow through the pipeline — the registry's
# per-language tables from the first filter to the dataset, in graph order (tests/test_tables.py keeps the
# registry's order a topological order of the asset graph).
FUNNEL_STAGES = tuple(
    (step, table.name, table.name, rejects.name if (rejects := rejects_table(table.name)) else None)
    for step, table in enumerate(funnel_tables(), start=1)
)
DERIVED_VIEWS = ("funnel_by_language", "rejects_by_reason", "pairs_per_domain", "split_sizes", "yield_by_language")
# Common Crawl's page selection (the cc_selection asset's rows), written to the lake by crawl, language and shard.
SELECTION_TABLE = CC_SELECTION.name
# (step, stage, table, what one row of the step is counted from): the yield funnel, pages to SFT records. A step
# appears when its table is in the lake; `selected_pages` only where pages were selected from the index.
YIELD_STEPS = (
    (1, "selected_pages", SELECTION_TABLE, "count(*)"),
    (2, "pages", RAW_CRAWL.name, "count(*)"),
    (3, "candidates", RAW_CRAWL.name, "sum(len(images))"),
    (4, "kept_alt_texts", ALT_TEXT_PAIRS.name, "count(*)"),
    (5, "images", IMAGES.name, "count(*)"),
    (6, "d_know_pairs", D_KNOW.name, "count(*)"),
    (7, "d_ling_pairs", D_LING.name, "count(*)"),
    (8, "sft_records", MELLA_DATASET.name, "count(*)"),
)
# A Common Crawl crawl's name in a WARC path (`crawl-data/CC-MAIN-2024-42/segments/…`); not followed by a digit,
# so a WARC file's own name (`CC-MAIN-20241003…-00000.warc.gz`) does not match. RE2 in DuckDB: linear time.
CRAWL_NAME_PATTERN = r"(CC-MAIN-[0-9A-Z]{4}-[0-9]{2})(?:[^0-9]|$)"  # CC-MAIN-2024-42; the demo's CC-MAIN-DEMO-01
OWN_CRAWL = "own"  # pages from own crawls and registered files that are not a Common Crawl crawl's
ALL_CRAWLS = "all"  # every row of the language, also rows that cannot be traced to one crawl
YIELD_SCHEMA = pl.Schema(
    {
        "language": pl.String,
        "crawl": pl.String,
        "step": pl.Int32,
        "stage": pl.String,
        "rows": pl.Int64,
        "ratio_to_previous": pl.Float64,
        "ratio_to_first": pl.Float64,
    }
)
# A folder under tables/ that becomes a view: what every registered table is called (DuckDB's identifiers are
# case-insensitive, so upper case could only collide).
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# The statements a read-only catalog runs.
READ_ONLY_STATEMENTS = frozenset({duckdb.StatementType.SELECT})
_log = logging.getLogger(__name__)


class ReadOnlyCatalogError(PermissionError):
    """A statement other than ``SELECT`` given to a read-only catalog."""


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier: double quotes around it, each double quote inside doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as a SQL string literal: single quotes around it, each single quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def catalog_tables(store: LakeStore) -> dict[str, str]:
    """The lake's tables that get a view (name → glob of their Parquet files): those whose folder name is a
    :data:`TABLE_NAME`; every other folder is skipped with a warning that names it."""
    tables = {}
    for name, pattern in store.tables().items():
        if TABLE_NAME.fullmatch(name):
            tables[name] = pattern
        else:
            _log.warning(
                "lake folder tables/%r skipped: a table name is 1 to 63 lowercase letters, digits and underscores, "
                "starting with a letter or an underscore",
                name,
            )
    return tables


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
                f"SELECT language, {step} AS step, {quote_literal(stage)} AS stage, count(*) AS kept, 0 AS rejected "
                f"FROM {quote_identifier(kept)} GROUP BY 1"
            )
        if rejects and rejects in tables:
            parts.append(
                f"SELECT language, {step} AS step, {quote_literal(stage)} AS stage, 0 AS kept, count(*) AS rejected "
                f"FROM {quote_identifier(rejects)} GROUP BY 1"
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
    union = "\n  UNION ALL ".join(
        f"SELECT language, {quote_literal(name)} AS stage, reason FROM {quote_identifier(name)}" for name in names
    )
    return (
        f"SELECT language, stage, reason, count(*)::BIGINT AS rows\nFROM (\n  {union}\n) "
        "GROUP BY ALL ORDER BY language, stage, rows DESC, reason"
    )


def _crawl_of(uri: str) -> str:
    """SQL: the crawl a WARC path or URI belongs to — the Common Crawl crawl it names, else ``own``; NULL for NULL."""
    found = f"nullif(regexp_extract({uri}, {quote_literal(CRAWL_NAME_PATTERN)}, 1), '')"
    return f"coalesce({found}, CASE WHEN {uri} IS NOT NULL THEN {quote_literal(OWN_CRAWL)} END)"


def _yield_sql(tables: set[str]) -> str | None:
    """The ``yield_by_language`` view over the tables present, or None without pages (no base to measure from).

    Rows are traced back to their crawl by lineage: pages and alt texts by their WARC (``warc_uri``; selected pages
    by ``warc_filename``), an image by the alt texts that point to its URL, a pair or record by the image it shows
    (``image_sha256`` → its URLs → their alt texts). A row whose lineage reaches no crawl or several (the same
    picture found in two crawls) counts only under ``all``."""
    if SELECTION_TABLE not in tables and RAW_CRAWL.name not in tables:
        return None
    steps = [step for step in YIELD_STEPS if step[2] in tables]
    traced = ALT_TEXT_PAIRS.name in tables and IMAGES.name in tables
    ctes = []
    if ALT_TEXT_PAIRS.name in tables:
        ctes.append(
            f"alt_crawl AS (SELECT DISTINCT language, image_url, {_crawl_of('warc_uri')} AS crawl FROM alt_text_pairs)"
        )
        # One crawl per image URL, or NULL where its alt texts come from several.
        ctes.append(
            "url_crawl AS (SELECT language, image_url, "
            "CASE WHEN count(DISTINCT crawl) = 1 THEN min(crawl) END AS crawl FROM alt_crawl GROUP BY ALL)"
        )
    if traced:
        ctes.append(
            "image_crawl AS (SELECT i.language, i.image_sha256, "
            "CASE WHEN count(DISTINCT a.crawl) = 1 THEN min(a.crawl) END AS crawl "
            "FROM (SELECT DISTINCT language, image_url, image_sha256 FROM images) i "
            "JOIN alt_crawl a ON a.language = i.language AND a.image_url = i.image_url GROUP BY ALL)"
        )
    counts = []
    for step, _, table, measure in steps:
        name = quote_identifier(table)
        if table == SELECTION_TABLE:
            source, crawl = f"{name} t", _crawl_of("warc_filename")
        elif table in (RAW_CRAWL.name, ALT_TEXT_PAIRS.name):
            source, crawl = f"{name} t", _crawl_of("warc_uri")
        elif table == IMAGES.name and ALT_TEXT_PAIRS.name in tables:
            source = f"{name} t LEFT JOIN url_crawl c ON c.language = t.language AND c.image_url = t.image_url"
            crawl = "c.crawl"
        elif traced:
            source = f"{name} t LEFT JOIN image_crawl c ON c.language = t.language AND c.image_sha256 = t.image_sha256"
            crawl = "c.crawl"
        else:
            source, crawl = f"{name} t", "NULL::VARCHAR"
        counts.append(f"SELECT t.language, {step} AS step, {crawl} AS crawl, {measure} AS n FROM {source} GROUP BY ALL")
    step_values = ", ".join(f"({step}, {quote_literal(stage)})" for step, stage, _, _ in steps)
    ctes += [
        "counts AS (\n  " + "\n  UNION ALL ".join(counts) + "\n)",
        # `all` holds every row; a crawl holds the rows traced to it alone.
        f"by_crawl AS (SELECT language, step, {quote_literal(ALL_CRAWLS)} AS crawl, sum(n) AS n FROM counts "
        "GROUP BY ALL UNION ALL SELECT language, step, crawl, sum(n) FROM counts WHERE crawl IS NOT NULL GROUP BY ALL)",
        # Every step for every language and crawl, so a step no row reached shows 0 instead of vanishing.
        "grid AS (SELECT DISTINCT b.language, b.crawl, s.step, s.stage "
        f"FROM by_crawl b, (VALUES {step_values}) s(step, stage))",
        "funnel AS (SELECT g.language, g.crawl, g.step, g.stage, coalesce(b.n, 0)::BIGINT AS rows FROM grid g "
        "LEFT JOIN by_crawl b ON b.language = g.language AND b.crawl = g.crawl AND b.step = g.step)",
    ]
    window = "OVER (PARTITION BY language, crawl ORDER BY step)"
    return (
        "WITH " + ",\n".join(ctes) + "\n"
        "SELECT language, crawl, step, stage, rows, "
        f"rows / nullif(lag(rows) {window}, 0) AS ratio_to_previous, "
        # The first step with rows is the base: own crawls have pages but no selection.
        f"rows / first_value(nullif(rows, 0) IGNORE NULLS) {window} AS ratio_to_first\n"
        f"FROM funnel ORDER BY language, crawl = {quote_literal(ALL_CRAWLS)}, crawl, step"
    )


def _derived_views(tables: set[str]) -> dict[str, str]:
    views = {
        "funnel_by_language": _funnel_sql(tables),
        "rejects_by_reason": _rejects_sql(tables),
        "yield_by_language": _yield_sql(tables),
    }
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


def current_shard_keys(count: int | None = None) -> list[str]:
    """The shard keys of ``count`` shards (default ``MELLA_SHARDS``), as the shard partitions name them."""
    return shard_keys(load_settings().shards if count is None else count)


_SHARD_PART = "/shard="


def _shard_of(key: str) -> str:
    return key.split(_SHARD_PART, 1)[1].split("/", 1)[0]


def current_files(keys: list[str], shards: Sequence[str]) -> list[str]:
    """The table files of ``keys`` a reader of the lake sees (``Lake.read``): shard files of ``shards`` only (a
    changed ``MELLA_SHARDS`` leaves the old count's files behind), and a folder's single file only where the
    folder has none of those shards (a lake written before the table was sharded)."""
    wanted = set(shards)
    sharded = {key.split(_SHARD_PART)[0] for key in keys if _SHARD_PART in key and _shard_of(key) in wanted}
    return [
        key
        for key in keys
        if (_shard_of(key) in wanted if _SHARD_PART in key else key.rsplit("/", 1)[0] not in sharded)
    ]


def _table_source(store: LakeStore, name: str, pattern: str, keys: list[str], shards: Sequence[str]) -> str:
    """SQL reading one table: its files' glob, or, for a sharded table with shard files, its current files."""
    # The `language` column is stored in every file, so Hive partition parsing is off (no duplicate column).
    options = "hive_partitioning = false, union_by_name = true"
    # Registered sharded tables only: a crawl's page selection keeps the shards it was selected with.
    if not (name in TABLES and TABLES[name].sharded and any(_SHARD_PART in key for key in keys)):
        return f"SELECT * FROM read_parquet({quote_literal(pattern)}, {options})"
    files = current_files(keys, shards)
    if not files:  # only another shard count's files: the columns, no rows
        return f"SELECT * FROM read_parquet({quote_literal(pattern)}, {options}) LIMIT 0"
    listed = ", ".join(quote_literal(store.location(key)) for key in files)
    return f"SELECT * FROM read_parquet([{listed}], {options})"


def open_catalog(
    store: LakeStore, *, allow_external: bool = False, shards: Sequence[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection with a view per lake table (named after its asset) and the derived views;
    read-only over the lake unless ``allow_external`` (see the module's docstring). A sharded table's view reads
    the files of ``shards`` (default: :func:`current_shard_keys`) as ``Lake.read`` does (:func:`current_files`).

    In-process and per caller on purpose: there is no shared writable database file, so parallel partitions
    never wait on a lock (docs/architecture.md, "Storage layout").
    """
    shards = current_shard_keys() if shards is None else shards
    connection = duckdb.connect(":memory:")
    try:
        store.configure_duckdb(connection)  # an S3 lake's credentials and endpoint (httpfs)
        tables = catalog_tables(store)
        keys_by_table: dict[str, list[str]] = {}
        for key in store.list("tables", "data.parquet"):
            keys_by_table.setdefault(key.split("/")[1], []).append(key)
        for name, pattern in tables.items():
            source = _table_source(store, name, pattern, keys_by_table.get(name, []), shards)
            connection.execute(f"CREATE VIEW {quote_identifier(name)} AS {source}")
        for name, sql in _derived_views(set(tables) - set(DERIVED_VIEWS)).items():
            try:
                connection.execute(f"CREATE VIEW {quote_identifier(name)} AS {sql}")
            except duckdb.Error:
                # A table written by an older version may lack a column a view needs; its own view still works.
                continue
        if not allow_external:
            _confine_to_lake(connection, store)
    except BaseException:
        connection.close()
        raise
    return connection


def _confine_to_lake(connection: duckdb.DuckDBPyConnection, store: LakeStore) -> None:
    """From now on the connection reads files under the lake's ``tables/`` only (a folder or an ``s3://`` prefix),
    loads no extension, and no ``SET`` changes that."""
    tables_dir = store.location("tables").rstrip("/") + "/"
    connection.execute(f"SET allowed_directories = [{quote_literal(tables_dir)}]")
    for setting in ("autoinstall_known_extensions", "autoload_known_extensions", "enable_external_access"):
        connection.execute(f"SET {setting} = false")
    connection.execute("SET lock_configuration = true")


def check_read_only(connection: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise :class:`ReadOnlyCatalogError` unless every statement of ``query`` is a ``SELECT`` (parsed, not run;
    a syntax error is DuckDB's own ``ParserException``)."""
    refused = [
        statement.type.name for statement in connection.extract_statements(query)
        if statement.type not in READ_ONLY_STATEMENTS
    ]  # fmt: skip
    if refused:
        raise ReadOnlyCatalogError(
            f"read-only catalog: only SELECT statements run over the lake, not {', '.join(refused)} "
            "(`mella sql --allow-external` runs any statement)"
        )


def run_sql(store: LakeStore, query: str, *, allow_external: bool = False) -> pl.DataFrame:
    """Run one SQL query over the lake's tables and return the result; ``SELECT`` only over the lake's files unless
    ``allow_external``."""
    with open_catalog(store, allow_external=allow_external) as connection:
        if not allow_external:
            check_read_only(connection, query)
        return connection.execute(query).pl()


def yield_funnel(store: LakeStore, language: str | None = None) -> pl.DataFrame:
    """The ``yield_by_language`` view, of one language (code) or all; no rows (same columns) where the lake holds
    no pages yet."""
    with open_catalog(store) as connection:
        present = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'yield_by_language'"
        ).fetchone()[0]
        if not present:
            return pl.DataFrame(schema=YIELD_SCHEMA)
        where = f"WHERE language = {quote_literal(language)} " if language else ""
        return connection.execute(
            f"SELECT * FROM yield_by_language {where}"
            f"ORDER BY language, crawl = {quote_literal(ALL_CRAWLS)}, crawl, step"
        ).pl()


def records_per_page(funnel: pl.DataFrame) -> float | None:
    """SFT records per extracted page over every crawl (``all``) of a :func:`yield_funnel` frame; None without pages
    or records."""
    everything = funnel.filter(pl.col("crawl") == ALL_CRAWLS)
    rows = dict(zip(everything["stage"].to_list(), everything["rows"].to_list(), strict=True))
    if not rows.get("pages") or "sft_records" not in rows:
        return None
    return rows["sft_records"] / rows["pages"]


def to_csv(frame: pl.DataFrame) -> str:
    """``frame`` as CSV text; a value CSV cannot hold (a list, an array, a struct, bytes) is written as JSON text
    (bytes as hex)."""
    columns = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
            values = [None if value is None else _json_text(value) for value in frame[name].to_list()]
            columns.append(pl.Series(name, values, dtype=pl.String))
        else:
            columns.append(frame[name])
    return pl.DataFrame(columns).write_csv() if columns else frame.write_csv()


def _json_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta | decimal.Decimal):
        return str(value)
    return repr(value)


def list_tables(store: LakeStore) -> pl.DataFrame:
    """The catalog's tables and derived views with their row counts (views counted too: they are small
    aggregates), tables first, each group by name, with the stage of each registered table."""
    rows = []
    with open_catalog(store) as connection:
        names = connection.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()
        for (name,) in names:
            (count,) = connection.execute(f"SELECT count(*) FROM {quote_identifier(name)}").fetchone()
            table = TABLES.get(name)
            rows.append(
                {
                    "name": name,
                    "kind": "view" if name in DERIVED_VIEWS else "table",
                    "rows": int(count),
                    "stage": table.stage if table else None,
                }
            )
    schema = {"name": pl.String, "kind": pl.String, "rows": pl.Int64, "stage": pl.String}
    frame = pl.DataFrame(rows, schema=schema)
    return frame.sort(pl.col("kind") == "view", "name")
