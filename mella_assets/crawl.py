"""Crawl group: register the WARC files that landed for a language, then extract every HTML page's images."""

import hashlib
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from mella_assets.languages import LANGUAGE_PARTITIONS
from mella_assets.lib.html import RAW_CRAWL_SCHEMA, extract_page, pages_to_frame
from mella_assets.lib.warc import WarcStats, iter_html_responses
from mella_assets.metadata import StageTimer, table_metadata
from resources.lake import Lake

WARC_SUFFIXES = (".warc.gz", ".warc")

CRAWL_SOURCES_SCHEMA = {
    "language": pl.String,
    "uri": pl.String,
    "key": pl.String,
    "size": pl.Int64,
    "sha256": pl.String,
    "origin": pl.String,
    "registered_at": pl.String,
}


def landing_prefix(language: str) -> str:
    return f"landing/{language}"


def _sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="crawl", kinds={"parquet"})
def crawl_sources(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """WARC files registered for the language: every file in ``landing/<code>/`` with size and sha256.

    A file seen before keeps its first ``registered_at``, so rerunning changes nothing.
    """
    timer = StageTimer()
    language = context.partition_key
    store = lake.store
    previous = lake.read_table_or_empty("crawl_sources", language)
    first_seen = dict(zip(previous["sha256"], previous["registered_at"], strict=True)) if previous.height else {}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    for key in store.list(landing_prefix(language)):
        if not key.endswith(WARC_SUFFIXES):
            continue
        path = store.path(key)
        sha = _sha256_file(path)
        rows.append(
            {
                "language": language,
                "uri": store.uri(key),
                "key": key,
                "size": path.stat().st_size,
                "sha256": sha,
                "origin": "landing",
                "registered_at": first_seen.get(sha, now),
            }
        )
    frame = pl.DataFrame(rows, schema=CRAWL_SOURCES_SCHEMA)
    lake.write_table("crawl_sources", language, frame)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=frame.height,
            output=frame,
            unit="files",
            extra={
                "bytes": int(frame["size"].sum() or 0),
                "new_files": sum(r["registered_at"] == now for r in rows),
            },
        )
    )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="crawl", deps=[crawl_sources], kinds={"parquet"})
def raw_crawl(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """One row per HTML response of the registered WARCs, with every unfiltered image candidate of the page.

    Non-HTML, non-200 and malformed records are skipped and counted, never fatal.
    """
    timer = StageTimer()
    language = context.partition_key
    sources = lake.read_table("crawl_sources", language)
    stats = WarcStats()
    pages = []
    for key in sources["key"]:
        for response in iter_html_responses(lake.path(key), stats):
            pages.append((response, extract_page(response.body, response.page_url, response.content_type)))
    frame = pages_to_frame(pages) if pages else pl.DataFrame(schema=RAW_CRAWL_SCHEMA)
    frame = frame.with_columns(pl.lit(language).alias("language"))
    lake.write_table("raw_crawl", language, frame)
    candidates = int(frame["images"].list.len().sum() or 0) if frame.height else 0
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=stats.records,
            output=frame.drop("images"),
            unit="records",
            extra={
                "warc_files": sources.height,
                "html_pages": frame.height,
                "image_candidates": candidates,
                "opt_out_pages": int(frame["opt_out"].sum() or 0) if frame.height else 0,
                "skipped": dg.MetadataValue.json(
                    {
                        "non_html": stats.skipped_non_html,
                        "status": stats.skipped_status,
                        "malformed": stats.malformed,
                    }
                ),
            },
        )
    )
