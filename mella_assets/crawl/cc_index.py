"""Select a crawl's pages in the registry's languages from Common Crawl's columnar index (Dagster-free).

The index is ~300 Parquet files per crawl under ``cc-index/table/cc-main/warc/crawl=<crawl>/subset=warc/``, one
row per capture with ``url``, ``url_host_tld``, ``url_host_registered_domain``, ``fetch_status``,
``content_mime_detected``, ``content_languages`` (up to three ISO 639-3 codes, primary first, from CLD2) and the
record's place: ``warc_filename``, ``warc_record_offset``, ``warc_record_length``. DuckDB reads only those columns
and pushes the status and MIME filters into the scan.

A page is selected for a language when it is a status-200 HTML capture (``text/html`` or ``application/xhtml+xml``
by content) and either its *primary* ``content_languages`` code is one of the language's ``iso639_3`` codes, or it
declares no language and its host is on one of the language's national domains (``Language.country_tlds``, the
page prior of ``lib/page_language.py``). A page whose languages list ours second is left out: its text is mostly
another language's. Each capture gets at most one language.

``shard`` = a stable hash of the registered domain (the host name where it has none, e.g. an IP address) modulo the
shard count: the first 64 bits of its MD5, the same in DuckDB and in :func:`shard_of`, in every process and Python
version. All of a site's pages share a shard, so site priors and per-host politeness stay in one run.

Where the index lives (``index``):

- a folder, ``s3://bucket/prefix`` or ``http(s)://host/prefix`` holding Common Crawl's layout (``cc-index/`` and
  ``crawl-data/``): with ``crawl``, the files listed in ``crawl-data/<crawl>/cc-index-table.paths.gz`` (globbing
  fails on Common Crawl's S3 and HTTPS), else, for a folder or S3, a glob of the ``subset=warc`` files of that crawl
  (every crawl when ``crawl`` is None);
- a ``….paths.gz`` listing itself (its paths are relative to the folder that holds ``crawl-data/``);
- a Parquet file or a glob of them.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import polars as pl

from mella_assets.languages import Language, load_languages
from mella_assets.settings import Settings

SELECTION_SCHEMA = pl.Schema(
    {
        "url": pl.String,
        "warc_filename": pl.String,
        "warc_record_offset": pl.Int64,
        "warc_record_length": pl.Int64,
        "language": pl.String,
        "shard": pl.Int32,
    }
)
HTML_MIME_TYPES = ("text/html", "application/xhtml+xml")
INDEX_PREFIX = "cc-index/table/cc-main/warc"
LISTING_NAME = "cc-index-table.paths.gz"
# Common Crawl answers 503 under load; DuckDB's own retries (with backoff) ride those out for the index reads.
_HTTP_RETRIES = 8
_HTTP_RETRY_WAIT_MS = 500


def shard_of(site: str, shards: int) -> int:
    """The shard of a registered domain: the first 64 bits of its MD5 (hex) modulo ``shards``."""
    return int(hashlib.md5(site.encode("utf-8")).hexdigest()[:16], 16) % shards


def page_shards(domains: pl.Series, shards: int) -> pl.Series:
    """The shard of each page of a WARC by its host (``raw_crawl``'s ``domain``) without a leading ``www.``: the
    same hash as :func:`shard_of`, so ``www.example.cz`` lands where the index's registered domain
    ``example.cz`` does (other subdomains are their own site: no public-suffix list is installed)."""
    sites = domains.fill_null("").str.strip_prefix("www.")
    lookup = {site: shard_of(site, shards) for site in sites.unique().to_list()}
    return sites.replace_strict(lookup, return_dtype=pl.Int64).alias("shard")


def selection_by_shard(selection: pl.DataFrame, crawl: str, shard_keys: list[str]) -> pl.DataFrame:
    """``select_pages`` rows (``shard`` a number below ``len(shard_keys)``) with the shard as its partition key
    (``"03"``) and the ``crawl`` they came from: the rows of the ``cc_selection`` table."""
    return selection.with_columns(
        pl.col("shard").replace_strict(dict(enumerate(shard_keys)), return_dtype=pl.String),
        pl.lit(crawl).alias("crawl"),
    )


def _is_remote(location: str) -> bool:
    return location.startswith(("s3://", "http://", "https://"))


def _is_http(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def connect(index: str, settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read ``index``: httpfs for URLs, the lake's S3 secret for ``s3://``."""
    connection = duckdb.connect()
    if index.startswith("s3://"):
        from mella_assets.lib.duckdb_s3 import enable_s3

        enable_s3(connection, settings)
    elif _is_http(index):
        from duckdb_extensions import import_extension

        import_extension("httpfs", con=connection)
    if _is_remote(index):
        connection.execute(f"SET http_retries = {_HTTP_RETRIES}")
        connection.execute(f"SET http_retry_wait_ms = {_HTTP_RETRY_WAIT_MS}")
    return connection


def _read_listing(connection: duckdb.DuckDBPyConnection, location: str) -> list[str] | None:
    """The lines of a ``.paths.gz`` listing; None when there is none at ``location``."""
    if not _is_remote(location):
        path = Path(location)
        return gzip.decompress(path.read_bytes()).decode().split() if path.is_file() else None
    try:
        row = connection.execute("SELECT content FROM read_blob(?)", [location]).fetchone()
    except duckdb.Error:  # a missing object reads as an error whatever the scheme
        return None
    return gzip.decompress(row[0]).decode().split() if row else None


def index_files(connection: duckdb.DuckDBPyConnection, index: str, crawl: str | None = None) -> list[str]:
    """The Parquet files (or one glob) of the ``subset=warc`` index of ``crawl`` at ``index`` (module docstring)."""
    index = str(index)
    if index.endswith(".parquet") or "*" in index:
        return [index]
    if index.endswith(".paths.gz"):
        root = index.split("/crawl-data/")[0] if "/crawl-data/" in index else index.rsplit("/", 1)[0]
        listing = _read_listing(connection, index)
        if listing is None:
            raise FileNotFoundError(f"no index listing at {index}")
        return _warc_subset(listing, root, crawl)
    if crawl is not None:
        listing = _read_listing(connection, _join(index, f"crawl-data/{crawl}/{LISTING_NAME}"))
        if listing is not None:
            return _warc_subset(listing, index, crawl)
    if _is_http(index):
        raise ValueError(
            f"{index}: an HTTP index needs --crawl and its crawl-data/<crawl>/{LISTING_NAME} (HTTP cannot be globbed)"
        )
    return [_join(index, f"{INDEX_PREFIX}/crawl={crawl or '*'}/subset=warc/*.parquet")]


def _warc_subset(listing: Iterable[str], root: str, crawl: str | None) -> list[str]:
    wanted = f"/crawl={crawl}/" if crawl else "/crawl="
    files = [_join(root, line) for line in listing if "/subset=warc/" in line and wanted in line]
    if not files:
        raise ValueError(
            f"the index listing under {root} names no subset=warc files" + (f" of {crawl}" if crawl else "")
        )
    return files


def _ascii_tld(tld: str) -> str:
    """A TLD as a URL's host carries it (``рф`` -> ``xn--p1ai``)."""
    return tld if tld.isascii() else tld.encode("idna").decode("ascii")


def _language_tables(languages: Mapping[str, Language]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(ISO 639-3 code, language) and (national TLD, language) pairs; a code or TLD claimed twice is an error."""
    codes: dict[str, str] = {}
    tlds: dict[str, str] = {}
    for language in languages.values():
        if not language.iso639_3:
            raise ValueError(f"language {language.code!r} has no iso639_3 codes: Common Crawl's index cannot find it")
        for iso in language.iso639_3:
            if codes.setdefault(iso, language.code) != language.code:
                raise ValueError(f"ISO 639-3 code {iso!r} belongs to both {codes[iso]!r} and {language.code!r}")
        for tld in language.country_tlds:
            for form in {tld.lower(), _ascii_tld(tld.lower())}:
                if tlds.setdefault(form, language.code) != language.code:
                    raise ValueError(f"national domain .{form} belongs to both {tlds[form]!r} and {language.code!r}")
    return sorted(codes.items()), sorted(tlds.items())


def _languages_of(languages: Mapping[str, Language] | Iterable[str] | str) -> Mapping[str, Language]:
    if isinstance(languages, Mapping):
        return languages
    codes = languages if isinstance(languages, str) else ",".join(languages)
    return load_languages(codes)


SELECTION_SQL = """
WITH pages AS (
    SELECT
        url,
        warc_filename,
        warc_record_offset,
        warc_record_length,
        lower(url_host_tld) AS tld,
        coalesce(url_host_registered_domain, url_host_name) AS site,
        nullif(trim(split_part(content_languages, ',', 1)), '') AS primary_language
    FROM read_parquet($files, hive_partitioning = false, union_by_name = true)
    WHERE fetch_status = 200 AND lower(content_mime_detected) IN ('text/html', 'application/xhtml+xml')
)
SELECT
    url,
    warc_filename,
    warc_record_offset::BIGINT AS warc_record_offset,
    warc_record_length::BIGINT AS warc_record_length,
    coalesce(by_code.language, by_domain.language) AS language,
    (('0x' || left(md5(site), 16))::UBIGINT % $shards)::INTEGER AS shard
FROM pages
LEFT JOIN codes AS by_code ON pages.primary_language = by_code.code
LEFT JOIN tlds AS by_domain ON pages.primary_language IS NULL AND pages.tld = by_domain.tld
WHERE coalesce(by_code.language, by_domain.language) IS NOT NULL
ORDER BY warc_filename, warc_record_offset
"""


def select_pages(
    index: str,
    languages: Mapping[str, Language] | Iterable[str] | str,
    crawl: str | None = None,
    shards: int = 1,
    *,
    settings: Settings | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pl.DataFrame:
    """The pages of ``crawl`` in ``languages`` (codes or the registry's :class:`Language` objects) from the
    columnar index at ``index``: :data:`SELECTION_SCHEMA` rows sorted by file and offset (rules: module docstring).
    ``settings``: S3 endpoint and credentials for an ``s3://`` index (default: the settings loaded now)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    wanted = _languages_of(languages)
    codes, tlds = _language_tables(wanted)
    connection = connection if connection is not None else connect(str(index), settings)
    files = index_files(connection, str(index), crawl)
    connection.execute("CREATE OR REPLACE TEMP TABLE codes (code VARCHAR, language VARCHAR)")
    connection.executemany("INSERT INTO codes VALUES (?, ?)", codes)
    connection.execute("CREATE OR REPLACE TEMP TABLE tlds (tld VARCHAR, language VARCHAR)")
    connection.executemany("INSERT INTO tlds VALUES (?, ?)", tlds)
    arrow = connection.execute(SELECTION_SQL, {"files": files, "shards": shards}).to_arrow_table()
    return pl.from_arrow(arrow).cast(SELECTION_SCHEMA).select(SELECTION_SCHEMA.names())
