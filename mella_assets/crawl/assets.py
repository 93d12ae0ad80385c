"""Crawl group: register the WARC files that landed for a language, then extract every HTML page's images."""

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.crawl.registration import extract_sources, register_sources, shard_pages
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, counts_by, table_metadata
from mella_assets.resources.lake import Lake, current_shards
from mella_assets.specs import language_of, shard_of, stage_specs, table_result
from mella_assets.tables import CRAWL_SOURCE_REJECTS, CRAWL_SOURCES, RAW_CRAWL


class CrawlSourcesConfig(dg.Config):
    """How registered remote WARC files (``sources/<code>.txt``) are downloaded."""

    max_source_bytes: int = Field(
        5_000_000_000,
        description="Largest remote WARC file downloaded, bytes; the default admits a Common Crawl WARC "
        "(~1.0-1.3 GB). The body streams to disk, so memory does not grow with it.",
    )
    timeout_s: float = Field(60.0, description="Connect/read timeout of a download, seconds.")
    download_timeout_s: float = Field(
        7200.0,
        description="Longest one source download may take, seconds, resumptions included (1.3 GB at 1 MB/s "
        "takes ~22 minutes).",
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description="Private networks a source URL may point to, e.g. ['127.0.0.1/32']."
    )

    def http(self) -> HttpFetcher:
        return HttpFetcher(
            timeout_s=self.timeout_s,
            max_bytes=self.max_source_bytes,
            total_timeout_s=max(self.download_timeout_s, 3 * self.timeout_s),
            allowed_networks=self.allowed_networks,
        )


@dg.multi_asset(name="crawl_sources", specs=stage_specs("crawl_sources"))
@watched_stage
def crawl_sources(
    context: dg.AssetExecutionContext, config: CrawlSourcesConfig, lake: Lake
) -> tuple[dg.MaterializeResult, ...]:
    """WARC files registered for the language: every file in ``landing/<code>/`` (origin ``landing``, or
    ``crawler`` for files the polite crawler wrote) plus the paths and URLs listed in ``sources/<code>.txt``
    (origin ``external``; URLs downloaded once into ``external/<code>/``), with size and sha256.

    A file seen before keeps its first ``registered_at``, so rerunning changes nothing. Registry entries that
    cannot be read go to ``crawl_source_rejects`` with a reason. At the stage deadline the files registered so far
    are kept and the rest (a download or a hash not finished) are ``stage_deadline`` rejects, which the next run
    registers.
    """
    timer = StageTimer()
    language = language_of(context)
    previous = lake.read_or_empty(CRAWL_SOURCES, language)
    frame, reject_frame, new_files = register_sources(language, lake.store, previous, config.http)
    lake.write(CRAWL_SOURCES, language, frame)
    lake.write(CRAWL_SOURCE_REJECTS, language, reject_frame)
    return table_result(
        CRAWL_SOURCES,
        frame,
        table_metadata(
            timer=timer,
            rows_in=frame.height + reject_frame.height,
            output=frame,
            rejects=reject_frame,
            unit="files",
            extra={
                "bytes": int(frame["size"].sum() or 0),
                "new_files": new_files,
                "files_by_origin": dg.MetadataValue.json(counts_by(frame, "origin")),
            },
        ),
    ), table_result(CRAWL_SOURCE_REJECTS, reject_frame)


class RawCrawlConfig(dg.Config):
    """How image candidates are extracted from the registered WARC files."""

    nearby_context: bool = Field(
        False,
        description="Also take bounded nearby text (≤ 200 chars) as context when an image has no <figcaption>; "
        "costs ~30 % of extraction speed.",
    )


@dg.multi_asset(name="raw_crawl", specs=stage_specs("raw_crawl", deps=[CRAWL_SOURCES]))
@watched_stage
def raw_crawl(context: dg.AssetExecutionContext, config: RawCrawlConfig, lake: Lake) -> dg.MaterializeResult:
    """One row per HTML response of the registered WARCs whose site falls in this partition's shard, with every
    unfiltered image candidate of the page.

    Each WARC's extraction is cached in the lake by the file's sha256 (``cache/raw_crawl/``), so adding one
    file to a language extracts only that file, and the language's other shards read the cached pages (counted
    as ``other_shard``). Context is the image's ``<figcaption>``; with the ``nearby_context`` config also the text
    around an image without one (cached apart, so switching recomputes). Non-HTML, non-200 and malformed records
    are skipped and counted, never fatal. At the stage deadline the files done are written and the rest listed in
    the ``stage_deadline`` metadata; the next run extracts those.
    """
    timer = StageTimer()
    language, shard = shard_of(context)
    sources = lake.read(CRAWL_SOURCES, language)
    done = extract_sources(sources, lake.store, config.nearby_context)
    stats = done.stats
    if done.unfinished:
        context.log.warning(
            f"stage deadline: {len(done.unfinished)} of {sources.height} WARC files not extracted (written without "
            "them; the next run extracts only those)"
        )
    frame, other_shards = shard_pages(done, int(shard), len(current_shards()))
    frame = frame if frame is not None else RAW_CRAWL.empty().drop("language")
    frame = frame.with_columns(pl.lit(language.code).alias("language"))
    lake.write(RAW_CRAWL, language, frame, shard)
    candidates = int(frame["images"].list.len().sum() or 0) if frame.height else 0
    return table_result(
        RAW_CRAWL,
        frame,
        table_metadata(
            timer=timer,
            rows_in=stats.records,
            output=frame.drop("images"),
            # Every record read that is not a page: what it was instead.
            dropped={
                "other_shard": other_shards,
                "not_a_response": stats.records - stats.responses,
                "non_html": stats.skipped_non_html,
                "http_status": stats.skipped_status,
                "malformed_response": stats.responses
                - stats.html_pages
                - stats.skipped_non_html
                - stats.skipped_status,
                "page_too_complex": stats.pages_too_complex,
                "page_url_too_long": stats.pages_url_too_long,
            },
            unit="records",
            extra={
                "warc_files": sources.height,
                "warc_files_extracted": done.extracted,
                "warc_files_cached": done.cached,
                # Not extracted by the stage deadline (reason stage_deadline): the next run extracts them.
                "warc_files_unfinished": len(done.unfinished),
                "stage_deadline": dg.MetadataValue.json(done.unfinished),
                "html_pages": frame.height,
                "image_candidates": candidates,
                "opt_out_pages": int(frame["opt_out"].sum() or 0) if frame.height else 0,
                "opt_out_by_source": dg.MetadataValue.json(
                    counts_by(frame.filter(pl.col("opt_out")), "opt_out_source")
                ),
                "skipped": dg.MetadataValue.json(
                    {
                        "non_html": stats.skipped_non_html,
                        "status": stats.skipped_status,
                        "malformed": stats.malformed,
                        "resynced": stats.resynced,
                        "pages_too_complex": stats.pages_too_complex,
                        "pages_url_too_long": stats.pages_url_too_long,
                        "candidates_url_too_long": stats.candidates_url_too_long,
                        "candidates_over_budget": stats.candidates_over_budget,
                    }
                ),
            },
        ),
    )
