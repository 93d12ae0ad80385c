"""Crawl group: register the WARC files that landed for a language, then extract every HTML page's images."""

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.crawl.cc_index import select_pages, selection_by_shard
from mella_assets.crawl.range_reads import extract_selection
from mella_assets.crawl.registration import extract_sources, register_sources, route_by_declared_language
from mella_assets.languages import LANGUAGES, Language
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, counts_by, table_metadata
from mella_assets.partitions import CRAWL_PARTITIONS, SHARD_BACKFILL
from mella_assets.resources.lake import Lake, current_shards
from mella_assets.settings import load_settings
from mella_assets.specs import COMMONCRAWL_POOL, NETWORK_RETRY, each_shard, language_of, stage_specs, table_result
from mella_assets.tables import CC_SELECTION, CRAWL_SOURCE_REJECTS, CRAWL_SOURCES, RAW_CRAWL


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


@dg.multi_asset(name="crawl_sources", specs=stage_specs("crawl_sources"), retry_policy=NETWORK_RETRY)
@watched_stage
def crawl_sources(
    context: dg.AssetExecutionContext, config: CrawlSourcesConfig, lake: Lake
) -> tuple[dg.MaterializeResult, ...]:
    """WARC files registered for the language: every file in ``landing/<code>/`` (origin ``landing``, or
    ``crawler`` for files the polite crawler wrote) plus the paths and URLs listed in ``sources/<code>.txt``
    (origin ``external``; also the entries of ``sources/all.txt``, registered for every language; URLs downloaded
    once into ``external/``, shared by every language), with size and sha256.

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


class CcSelectionConfig(dg.Config):
    """Where a crawl's pages are selected from (defaults: the settings ``MELLA_CC_INDEX``, every language)."""

    index: str = Field(
        "",
        description="Root of Common Crawl's columnar index (folder, s3://commoncrawl/, https://data.commoncrawl.org/);"
        " empty: MELLA_CC_INDEX.",
    )
    languages: list[str] = Field(default_factory=list, description="Language codes to select (empty: all).")


@dg.multi_asset(name="cc_selection", specs=stage_specs("cc_selection"), retry_policy=NETWORK_RETRY)
@watched_stage
def cc_selection(context: dg.AssetExecutionContext, config: CcSelectionConfig, lake: Lake) -> dg.MaterializeResult:
    """The crawl's pages in the registry's languages, selected from Common Crawl's columnar index by DuckDB (status
    200 HTML whose primary ``content_languages`` is a registry language, or none declared on one of its national
    domains) and written by language and shard (a registered domain's pages share a shard). Every (language, shard)
    is written, empty when nothing was selected, so a rerun replaces all of the crawl's rows. The shard runs of
    ``raw_crawl`` read their rows and fetch exactly those records by HTTP range."""
    timer = StageTimer()
    crawl = context.partition_key
    settings = load_settings()
    index = config.index or settings.cc_index
    if not index:
        raise ValueError("cc_selection needs the index: set MELLA_CC_INDEX (or the asset's `index` config)")
    languages = [LANGUAGES[code] for code in (config.languages or list(LANGUAGES))]
    shards = current_shards()
    selected = select_pages(index, {lang.code: lang for lang in languages}, crawl=crawl, shards=len(shards))
    frame = selection_by_shard(selected, crawl, shards)
    for language in languages:
        of_language = frame.filter(pl.col("language") == language.code)
        for shard in shards:
            lake.write(CC_SELECTION, language, of_language.filter(pl.col("shard") == shard), shard, crawl=crawl)
    return table_result(
        CC_SELECTION,
        frame,
        {
            "crawl": crawl,
            "index": index,
            "pages_by_language": dg.MetadataValue.json(counts_by(frame, "language")),
            "pages_by_shard": dg.MetadataValue.json(counts_by(frame, "shard")),
            "selected_bytes": int(frame["warc_record_length"].sum() or 0),
            "warc_files": frame["warc_filename"].n_unique(),
            "wall_seconds": round(timer.seconds, 3),
        },
    )


class RawCrawlConfig(dg.Config):
    """How image candidates are extracted from the registered WARC files."""

    nearby_context: bool = Field(
        False,
        description="Also take bounded nearby text (≤ 200 chars) as context when an image has no <figcaption>; "
        "costs ~30 % of extraction speed.",
    )
    route_by_declared_language: bool = Field(
        True,
        description="Leave out pages whose own declaration (<html lang>, else og:locale) names another language "
        "(counted as declares_other_language): the crawl-side twin of alt_text_pairs' page_language_gate, so "
        "their candidates never reach the alt-text filters nor alt_text_rejects. English and disagreeing "
        "declarations stay.",
    )


@dg.multi_asset(
    name="raw_crawl",
    specs=stage_specs("raw_crawl", deps=[CRAWL_SOURCES, CC_SELECTION]),
    pool=COMMONCRAWL_POOL,
    retry_policy=NETWORK_RETRY,
    backfill_policy=SHARD_BACKFILL,
)
@watched_stage
def raw_crawl(context: dg.AssetExecutionContext, config: RawCrawlConfig, lake: Lake) -> dg.MaterializeResult:
    """One row per HTML response of the registered WARCs whose site falls in this partition's shard, with every
    unfiltered image candidate of the page.

    Each WARC is extracted once for every language and shard and cached in per-shard slices by its sha256
    (``cache/raw_crawl/<version>/<sha256>/shards-N/``): adding a file extracts only that file, and a shard run reads
    only its own slice of each file (the file's other pages counted as ``other_shard``). Pages whose own declaration
    names another language are left out (``declares_other_language``; config ``route_by_declared_language``). The
    shard's pages selected from Common Crawl's index are read by range, each once (``selected_already_read``: a
    registered WARC or another crawl had it). Context is the image's ``<figcaption>``; with the ``nearby_context``
    config also the text around an image without one (cached apart, so switching recomputes). Non-HTML, non-200
    and malformed records are skipped and counted, never fatal. At the stage deadline the files done are written
    and the rest listed in the ``stage_deadline`` metadata; the next run extracts those.
    """
    return each_shard(context, lambda language, shard: _raw_crawl_shard(context, config, lake, language, shard))


def _raw_crawl_shard(
    context: dg.AssetExecutionContext, config: RawCrawlConfig, lake: Lake, language: Language, shard: str
) -> dg.MaterializeResult:
    timer = StageTimer()
    sources = lake.read(CRAWL_SOURCES, language)
    done = extract_sources(sources, lake.store, config.nearby_context, shard=int(shard), shards=len(current_shards()))
    stats = done.stats
    if done.unfinished:
        context.log.warning(
            f"stage deadline: {len(done.unfinished)} of {sources.height} WARC files not extracted (written without "
            "them; the next run extracts only those)"
        )
    frame, other_shards = done.pages(), done.other_shard
    # The shard's pages of every registered crawl, read by range: each selected record once, no WARC copied.
    selection = lake.read_crawls(CC_SELECTION, crawls_of(context), language, shard)
    # A page is read once: not by range when a registered WARC had it, once when several crawls selected it (the
    # first crawl's copy). A page's shard is its site's, so the registered copy is in this shard too.
    to_read = selection.unique("url", keep="first", maintain_order=True)
    if frame is not None:
        to_read = to_read.filter(pl.col("url").is_in(frame["page_url"].implode()).not_())
    ranged = None
    if to_read.height:
        settings = load_settings()
        ranged = extract_selection(
            to_read, settings.cc_warc_base, stats, nearby_context=config.nearby_context,
            concurrency=settings.cc_concurrency, rate=settings.cc_rate,
        )  # fmt: skip
        frame = ranged.pages if frame is None else pl.concat([frame, ranged.pages], how="vertical_relaxed")
    frame = frame if frame is not None else RAW_CRAWL.empty().drop("language")
    frame, routed = route_by_declared_language(frame, language) if config.route_by_declared_language else (frame, 0)
    frame = frame.with_columns(pl.lit(language.code).alias("language"))
    failed = ranged.failures.height if ranged is not None else 0
    lake.write(RAW_CRAWL, language, frame, shard)
    candidates = int(frame["images"].list.len().sum() or 0) if frame.height else 0
    return table_result(
        RAW_CRAWL,
        frame,
        table_metadata(
            timer=timer,
            rows_in=stats.records + failed,
            output=frame.drop("images"),
            # Every record read that is not a page: what it was instead.
            dropped={
                "other_shard": other_shards,
                # Pages declaring another language (RawCrawlConfig.route_by_declared_language).
                "declares_other_language": routed,
                # Selected records whose range read failed after its retries (the next run reads them again).
                "range_read_failed": failed,
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
                "selected_records": selection.height,
                # Selected pages not read by range: a registered WARC had them, or another crawl's copy was read.
                "selected_already_read": selection.height - to_read.height,
                "range_reads": dg.MetadataValue.json(ranged.read.as_dict() if ranged is not None else {}),
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


def crawls_of(context: dg.AssetExecutionContext) -> list[str]:
    """The crawls registered as ``cc_selection`` partitions in the run's instance."""
    return sorted(context.instance.get_dynamic_partitions(CRAWL_PARTITIONS.name))
