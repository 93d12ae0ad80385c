"""Crawl group: register the WARC files that landed for a language, then extract every HTML page's images."""

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.sources import WARC_SUFFIXES, download_key, download_source, parse_registry, registry_key
from mella_assets.crawl.warc import WarcStats
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.lake import file_fingerprint
from mella_assets.lib.watchdog import check_deadline, watched_stage
from mella_assets.metadata import StageTimer, counts_by, table_metadata
from mella_assets.resources.lake import Lake
from mella_assets.specs import language_of, stage_specs, table_result
from mella_assets.tables import CRAWL_SOURCE_REJECTS, CRAWL_SOURCES, RAW_CRAWL


def landing_prefix(language: str) -> str:
    return f"landing/{language}"


def _sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_memo_key(name: str, size: int, version: str) -> str:
    """Where the sha256 of one version of a registered file is remembered (``name``: lake key or file URI)."""
    identity = "\n".join((name, str(size), version))
    return f"cache/sha256/{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def source_sha256(store, key: str | None, path: Path | None) -> tuple[str, int]:
    """``(sha256, size)`` of a registered WARC (a lake ``key``, or a local ``path`` outside the lake).

    Remembered in the lake by name, size and version (S3 ETag, or modification time and inode), so a rerun, or a fresh
    worker whose S3 cache is empty, neither downloads nor re-reads gigabytes it has hashed before (raw_crawl's
    extraction cache is keyed by this sha256 and needs the file only for a WARC it has not extracted)."""
    size, version = store.fingerprint(key) if key is not None else file_fingerprint(path)
    memo = sha256_memo_key(key if key is not None else path.as_uri(), size, version)
    if store.exists(memo):
        return store.get_bytes(memo).decode("ascii").strip(), size
    sha = _sha256_file(store.local_path(key) if key is not None else path)
    store.put_bytes(memo, sha.encode("ascii"))
    return sha, size


# Bump when extraction changes, so cached per-WARC results are recomputed (v4: nearby-text context became opt-in,
# so a v3 entry, computed with it, is not the default's result).
EXTRACTION_VERSION = "v4"


def extraction_cache_key(sha256: str, nearby_context: bool = False) -> str:
    """Where one WARC's extraction is cached: by extraction version, context mode and the file's sha256."""
    version = f"{EXTRACTION_VERSION}-nearby" if nearby_context else EXTRACTION_VERSION
    return f"cache/raw_crawl/{version}/{sha256}.parquet"


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


def _external_sources(language: str, lake: Lake, config: CrawlSourcesConfig) -> tuple[list[tuple], list[dict]]:
    """(files, rejects) of the registry ``sources/<code>.txt``: files as (uri, lake key, None) for downloads and
    (uri, None, local path) for local files."""
    store = lake.store
    if not store.exists(registry_key(language)):
        return [], []
    files, rejects = [], []
    http = None
    for entry in parse_registry(store.get_bytes(registry_key(language)).decode("utf-8", errors="replace")):
        if entry.url is not None:
            key = download_key(language, entry.url)
            if not store.exists(key):
                http = http or config.http()
                result = download_source(entry.url, key, store, http)
                if result.error_reason is not None:
                    rejects.append(
                        {
                            "language": language,
                            "uri": entry.url,
                            "reason": result.error_reason,
                            "http_status": result.status,
                        }
                    )
                    continue
            files.append((entry.url, key, None))
        elif entry.path is not None and entry.path.is_file():
            files.append((entry.path.resolve().as_uri(), None, entry.path.resolve()))
        else:
            rejects.append({"language": language, "uri": entry.text, "reason": "file_not_found", "http_status": None})
    return files, rejects


@dg.multi_asset(name="crawl_sources", specs=stage_specs("crawl_sources"))
@watched_stage
def crawl_sources(
    context: dg.AssetExecutionContext, config: CrawlSourcesConfig, lake: Lake
) -> tuple[dg.MaterializeResult, ...]:
    """WARC files registered for the language: every file in ``landing/<code>/`` (origin ``landing``, or
    ``crawler`` for files the polite crawler wrote) plus the paths and URLs listed in ``sources/<code>.txt``
    (origin ``external``; URLs downloaded once into ``external/<code>/``), with size and sha256.

    A file seen before keeps its first ``registered_at``, so rerunning changes nothing. Registry entries that
    cannot be read go to ``crawl_source_rejects`` with a reason.
    """
    timer = StageTimer()
    language = language_of(context)
    store = lake.store
    previous = lake.read_or_empty(CRAWL_SOURCES, language)
    first_seen = dict(zip(previous["sha256"], previous["registered_at"], strict=True)) if previous.height else {}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    files = [
        (store.uri(key), key, None, "crawler" if "/crawl-" in key else "landing")
        for key in store.list(landing_prefix(language.code))
        if key.endswith(WARC_SUFFIXES)
    ]
    external, rejects = _external_sources(language.code, lake, config)
    files += [(uri, key, path, "external") for uri, key, path in external]
    rows = []
    for uri, key, path, origin in files:
        check_deadline()
        sha, size = source_sha256(store, key, path)
        rows.append(
            {
                "language": language.code,
                "uri": uri,
                "key": key,
                "path": None if key else str(path),  # a lake key says where keyed files are
                "size": size,
                "sha256": sha,
                "origin": origin,
                "registered_at": first_seen.get(sha, now),
            }
        )
    frame = pl.DataFrame(rows, schema=CRAWL_SOURCES.schema)
    reject_frame = pl.DataFrame(rejects, schema=CRAWL_SOURCE_REJECTS.schema)
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
                "new_files": sum(r["registered_at"] == now for r in rows),
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
    """One row per HTML response of the registered WARCs, with every unfiltered image candidate of the page.

    Each WARC's extraction is cached in the lake by the file's sha256 (``cache/raw_crawl/``), so adding one
    file to a language extracts only that file. Context is the image's ``<figcaption>``; with the
    ``nearby_context`` config also the text around an image without one (cached apart, so switching recomputes).
    Non-HTML, non-200 and malformed records are skipped and counted, never fatal.
    """
    timer = StageTimer()
    language = language_of(context)
    sources = lake.read(CRAWL_SOURCES, language)
    store = lake.store
    stats, frames, extracted, cached = WarcStats(), [], 0, 0
    for row in sources.iter_rows(named=True):
        check_deadline()
        cache_key = extraction_cache_key(row["sha256"], config.nearby_context)
        stats_key = cache_key.removesuffix(".parquet") + ".json"
        if store.exists(cache_key) and store.exists(stats_key):
            frame = pl.read_parquet(io.BytesIO(store.get_bytes(cache_key)))
            file_stats = WarcStats(**json.loads(store.get_bytes(stats_key)))
            cached += 1
        else:
            file_stats = WarcStats()
            path = store.local_path(row["key"]) if row["key"] else Path(row["path"])
            frame = extract_warc(path, file_stats, nearby_context=config.nearby_context)
            # The frame first, the stats last: a crash between them leaves no half-valid cache entry.
            store.put_bytes(cache_key, _parquet_bytes(frame))
            store.put_bytes(stats_key, json.dumps(file_stats.as_dict()).encode())
            extracted += 1
        frames.append(frame.with_columns(pl.lit(row["uri"]).alias("warc_uri")))
        for name, value in file_stats.as_dict().items():
            setattr(stats, name, getattr(stats, name) + value)
    frame = pl.concat(frames, how="vertical_relaxed") if frames else RAW_CRAWL.empty().drop("language")
    frame = frame.with_columns(pl.lit(language.code).alias("language"))
    lake.write(RAW_CRAWL, language, frame)
    candidates = int(frame["images"].list.len().sum() or 0) if frame.height else 0
    return table_result(
        RAW_CRAWL,
        frame,
        table_metadata(
            timer=timer,
            rows_in=stats.records,
            output=frame.drop("images"),
            unit="records",
            extra={
                "warc_files": sources.height,
                "warc_files_extracted": extracted,
                "warc_files_cached": cached,
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
                    }
                ),
            },
        ),
    )


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_parquet(out, compression="zstd")
    return out.getvalue()
