"""D_know of one language, built by DuckDB over the shard files of ``alt_text_pairs`` and ``images`` and written as
it streams out, so a run's memory is bounded by a batch and DuckDB's memory limit, not by the language.

The rows are those of the in-memory polars recipe it replaced (kept in tests/support/d_know_reference.py;
tests/test_d_know_duckdb.py checks both give the same table):

1. the language's kept alt texts, every current shard in shard order, sorted by page URL (stable: a page's
   candidates keep their order), so the first of a pair repeated on sites of different shards is the same whatever
   the shard count and wherever the page was read from;
2. one ``images`` row per image URL, the first shard's (a URL on pages of two shards is fetched by each);
3. their inner join (a pair whose image is not stored is dropped: ``no_stored_image``);
4. one row per (image_sha256, alt_text), the first (``duplicate_pair``);
5. the headline cap (``MELLA_DKNOW_MAX_HEADLINE_SHARE``): headlines beyond the share, chosen by content hash
   (:func:`~mella_assets.know.alt_kind.content_ranks`, computed here in SQL), are dropped (``headline_over_mix``);
6. keywords per batch of rows in Python (:func:`~mella_assets.lib.text.keywords`), each batch handed to ``write``
   (the asset's ``Lake.write_batches``: appended to a Parquet file that replaces the lake's table atomically when it
   is complete, a temporary file renamed or one upload to S3).

Steps 1-5 run in a DuckDB database file in a temporary folder (``TMPDIR``) as joins and aggregates, which spill to
disk beyond the memory limit (``MELLA_DKNOW_MEMORY_MB``); the order is sorted range by range of page URLs
(:data:`SORT_RANGE_ROWS` rows each), so no step holds the language in memory (benchmarks/results/d_know.md).
Dagster-free: the ``d_know`` asset calls :func:`build_d_know`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from mella_assets.know.alt_kind import KINDS, headline_limit
from mella_assets.languages import Language
from mella_assets.lib.catalog import quote_literal
from mella_assets.lib.lake import LakeStore, TableNotFoundError
from mella_assets.lib.text import keywords
from mella_assets.settings import Settings
from mella_assets.tables import ALT_TEXT_PAIRS, D_KNOW, IMAGES

# Rows per batch handed from DuckDB to Python for keywords and the Parquet writer (one row group each).
BATCH_ROWS = 20_000
PREVIEW_ROWS = 5
# The final order is sorted range by range of page URLs, about this many rows a range: DuckDB's ORDER BY needs
# memory that grows with the rows it sorts (357k kept rows failed at 64 MiB), a range's does not grow with the
# language. The bounds are every SAMPLE_PER_RANGE-th page URL of a random sample.
SORT_RANGE_ROWS = 100_000
SAMPLE_PER_RANGE = 50
# A row's rank for the headline cap: the first 8 bytes of the sha256 of its image sha256 and alt text joined by a
# unit separator, as an unsigned integer (content_ranks in know/alt_kind.py, the same number in SQL).
_RANK_SQL = "('0x' || left(sha256(coalesce(image_sha256, '') || chr(31) || coalesce(alt_text, '')), 16))::UBIGINT"


@dataclass(frozen=True)
class DKnowBuild:
    """What :func:`build_d_know` wrote: the table's key, the rows it read and kept, what it dropped by reason, the
    kept rows per ``alt_kind`` and the first rows (a preview)."""

    key: str
    rows_in: int
    rows: int
    no_stored_image: int
    duplicate_pair: int
    headline_over_mix: int
    kind_counts: dict[str | None, int]
    preview: pl.DataFrame

    def kind_shares(self) -> dict[str, float]:
        """Share of each of :data:`~mella_assets.know.alt_kind.KINDS` among the kept rows (as ``kind_shares``)."""
        return {kind: round(self.kind_counts.get(kind, 0) / self.rows, 4) if self.rows else 0.0 for kind in KINDS}


def shard_locations(store: LakeStore, table: str, language: str, shards: Sequence[str]) -> list[str]:
    """Where DuckDB reads one language of a sharded table: its files of ``shards`` that exist, in shard order
    (files of another shard count are left out), or the language's single file of a lake written before sharding;
    :class:`TableNotFoundError` when there is neither (the files ``LakeStore.read_shards`` reads)."""
    keys = [key for key in (store.table_key(table, language, shard) for shard in shards) if store.exists(key)]
    if not keys and store.exists(store.table_key(table, language)):
        keys = [store.table_key(table, language)]
    if not keys:
        raise TableNotFoundError(f"table {table!r} for language {language!r} has no shard yet: materialize {table}")
    return [store.location(key) for key in keys]


def _files(locations: Sequence[str]) -> str:
    """SQL: the rows of the files at ``locations`` with ``origin``, where a row comes from: its file's place in the
    list (high bits) and its row number in the file, so ordering by ``origin`` is reading the files in turn."""
    # Literals, not query parameters: DuckDB's Python parameters import pandas (~2 s, ~60 MB) for a list of names.
    files = "[" + ", ".join(quote_literal(location) for location in locations) + "]"
    return (
        f"(SELECT *, (list_position({files}, filename)::BIGINT << 40) + file_row_number AS origin "
        f"FROM read_parquet({files}, filename = true, file_row_number = true, union_by_name = true, "
        "hive_partitioning = false))"
    )


# Steps 1-4 as joins and aggregates, which DuckDB spills to disk under its memory limit (window functions over the
# language ran out of memory at 256 MB with 400k pairs). A pair's place in the language is (page_url, origin):
# the stable sort by page URL of the shards read in turn.
_FIRST = "min(struct_pack(known := page_url IS NOT NULL, page_url := coalesce(page_url, ''), origin := origin)).origin"
_ORDER = "page_url NULLS FIRST, origin"
_STEPS = (
    "CREATE TABLE pairs AS SELECT origin, image_url, alt_text, page_url, domain, alt_kind FROM {pairs}",
    "CREATE TABLE listed AS SELECT origin, image_url, image_sha256, image_key, phash FROM {images} "
    "WHERE image_url IS NOT NULL",
    # One row per image URL, the first shard's.
    "CREATE TABLE fetched AS SELECT image_url, image_sha256, image_key, phash FROM listed "
    "WHERE origin IN (SELECT min(origin) FROM listed GROUP BY image_url)",
    "CREATE TABLE joined AS SELECT p.origin, p.image_url, p.alt_text, p.page_url, p.domain, p.alt_kind, "
    "f.image_sha256, f.image_key, f.phash FROM pairs p JOIN fetched f ON p.image_url = f.image_url",
    # The first row of each (image_sha256, alt_text), with the headline cap's rank.
    f"CREATE TABLE kept AS SELECT *, {_RANK_SQL} AS rank FROM joined "
    f"WHERE origin IN (SELECT {_FIRST} FROM joined GROUP BY image_sha256, alt_text)",
)
_OUT_COLUMNS = ("image_sha256", "image_key", "phash", "alt_text", "page_url", "domain", "image_url", "alt_kind")


def build_d_know(
    store: LakeStore,
    language: Language,
    shards: Sequence[str],
    max_headline_share: float,
    write: Callable[[Iterable[pl.DataFrame]], str],
    *,
    batch_rows: int = BATCH_ROWS,
    sort_range_rows: int = SORT_RANGE_ROWS,
    memory_mb: int = Settings.dknow_memory_mb,
) -> DKnowBuild:
    """Build the ``d_know`` table of ``language`` from the ``shards`` of ``alt_text_pairs`` and ``images`` (see the
    module's docstring) and hand its rows, in order and in batches, to ``write`` (which returns the table's key),
    DuckDB holding at most ``memory_mb`` MiB (``MELLA_DKNOW_MEMORY_MB``) before it spills;
    :class:`TableNotFoundError` when either table has no file yet."""
    files = {
        "pairs": _files(shard_locations(store, ALT_TEXT_PAIRS.name, language.code, shards)),
        "images": _files(shard_locations(store, IMAGES.name, language.code, shards)),
    }
    with tempfile.TemporaryDirectory(prefix="mella-d-know-") as scratch:
        connection = duckdb.connect(str(Path(scratch) / "d_know.duckdb"))
        try:
            connection.execute("SET enable_progress_bar = false")  # no progress bar on the run's stdout
            connection.execute("SET preserve_insertion_order = false")  # every order is an ORDER BY
            connection.execute(f"SET memory_limit = '{memory_mb:d}MiB'")
            connection.execute(f"SET temp_directory = {quote_literal(str(Path(scratch) / 'spill'))}")
            store.configure_duckdb(connection)  # an S3 lake's endpoint and credentials
            for step in _STEPS:
                connection.execute(step.format(**files))
            rows_in, joined, kept, headlines, others = connection.execute(
                "SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM joined), count(*), "
                "count(*) FILTER (alt_kind = 'headline'), count(*) FILTER (alt_kind <> 'headline') FROM kept"
            ).fetchone()
            limit = headline_limit(headlines, others, max_headline_share)
            over_mix = _over_mix(connection, headlines, limit)
            written = _Written()
            written.key = write(_batches(language, connection, over_mix, batch_rows, sort_range_rows, written))
        finally:
            connection.close()
    return DKnowBuild(
        key=written.key,
        rows_in=rows_in,
        rows=written.rows,
        no_stored_image=rows_in - joined,
        duplicate_pair=joined - kept,
        headline_over_mix=max(headlines - limit, 0),
        kind_counts=written.kind_counts,
        preview=written.preview,
    )


def _over_mix(connection: duckdb.DuckDBPyConnection, headlines: int, limit: int) -> str:
    """SQL over ``kept``: true for the headlines beyond the first ``limit`` by rank, then by place (the cap's
    excess; ``cap_headlines`` ranks ties by row order)."""
    headline = "coalesce(alt_kind = 'headline', false)"
    if limit >= headlines:
        return "false"
    if not limit:
        return headline
    # The limit-th smallest rank: its bucket (top 16 bits) from counts per bucket, then its place in that bucket
    # (~1/65536 of the headlines): no sort of every headline. Among the headlines of exactly that rank (almost
    # always one), those past the limit by place are over too.
    buckets = connection.execute(
        f"SELECT rank >> 48 AS bucket, count(*) FROM kept WHERE {headline} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    before, bucket = 0, buckets[-1][0]
    for candidate, count in buckets:
        if before + count >= limit:
            bucket = candidate
            break
        before += count
    (last,) = connection.execute(
        f"SELECT rank FROM kept WHERE {headline} AND rank >> 48 = {bucket:d} "
        f"ORDER BY rank LIMIT 1 OFFSET {limit - 1 - before:d}"
    ).fetchone()
    (below,) = connection.execute(f"SELECT count(*) FROM kept WHERE {headline} AND rank < {last:d}").fetchone()
    tied = connection.execute(
        f"SELECT origin FROM kept WHERE {headline} AND rank = {last:d} ORDER BY {_ORDER} OFFSET {limit - below:d}"
    ).fetchall()
    beyond = f"rank > {last:d}"
    if tied:
        beyond += f" OR origin IN ({', '.join(str(origin) for (origin,) in tied)})"
    return f"({headline} AND ({beyond}))"


def _page_ranges(connection: duckdb.DuckDBPyConnection, range_rows: int) -> list[str]:
    """SQL conditions on ``kept`` that split it into consecutive page-URL ranges of about ``range_rows`` rows, in
    order (the first holds the rows without a page URL): sorted one after the other, they are the whole order."""
    (rows,) = connection.execute("SELECT count(*) FROM kept").fetchone()
    if rows <= range_rows:
        return ["true"]
    # Bounds from a sample, kept in a table and compared by subquery: page URLs never become SQL literals.
    sample = -(-rows // range_rows) * SAMPLE_PER_RANGE
    connection.execute(
        "CREATE OR REPLACE TABLE bounds AS SELECT row_number() OVER (ORDER BY page_url) AS i, page_url FROM ("
        "SELECT DISTINCT page_url FROM (SELECT page_url, row_number() OVER (ORDER BY page_url) AS n FROM ("
        f"SELECT page_url FROM kept WHERE page_url IS NOT NULL USING SAMPLE reservoir({sample:d} ROWS))) "
        f"WHERE n % {SAMPLE_PER_RANGE:d} = 0)"
    )
    (count,) = connection.execute("SELECT count(*) FROM bounds").fetchone()
    bound = "(SELECT page_url FROM bounds WHERE i = {})".format
    if not count:
        return ["true"]
    return [
        f"(page_url IS NULL OR page_url < {bound(1)})",
        *(f"(page_url >= {bound(i)} AND page_url < {bound(i + 1)})" for i in range(1, count)),
        f"page_url >= {bound(count)}",
    ]


@dataclass
class _Written:
    """What the batches handed to the writer held: rows, rows per ``alt_kind``, the first rows."""

    key: str = ""
    rows: int = 0
    kind_counts: dict[str | None, int] = field(default_factory=dict)
    preview: pl.DataFrame = field(default_factory=D_KNOW.empty)


def _batches(
    language: Language,
    connection: duckdb.DuckDBPyConnection,
    over_mix: str,
    batch_rows: int,
    sort_range_rows: int,
    written: _Written,
) -> Iterator[pl.DataFrame]:
    """The kept rows but those ``over_mix``, in order, as ``d_know`` batches with their keywords; counted into
    ``written`` as they go."""
    for page_range in _page_ranges(connection, sort_range_rows):
        reader = connection.execute(
            f"SELECT {', '.join(_OUT_COLUMNS)} FROM kept WHERE NOT {over_mix} AND {page_range} ORDER BY {_ORDER}"
        ).to_arrow_reader(batch_rows)
        for batch in reader:
            frame = _with_keywords(pl.from_arrow(batch), language)
            written.rows += frame.height
            for kind, count in frame["alt_kind"].value_counts().iter_rows():
                written.kind_counts[kind] = written.kind_counts.get(kind, 0) + count
            if written.preview.height < PREVIEW_ROWS:
                written.preview = pl.concat([written.preview, frame.head(PREVIEW_ROWS - written.preview.height)])
            yield frame


def _with_keywords(batch: pl.DataFrame, language: Language) -> pl.DataFrame:
    """A batch of kept rows as ``d_know`` rows: the language, keywords of each alt text, the declared columns."""
    words = [None if text is None else keywords(text, language) for text in batch["alt_text"].to_list()]
    return D_KNOW.conform(
        batch.with_columns(
            pl.lit(language.code).alias("language"), pl.Series("keywords", words, dtype=pl.List(pl.String))
        )
    )
