"""Registering a language's crawl files: the WARCs in ``landing/<code>/`` and the paths and URLs of
``sources/<code>.txt``, each with its size and sha256 (remembered in the lake), plus the per-WARC extraction
cache that `raw_crawl` reads. Dagster-free: the crawl assets call it."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from mella_assets.crawl.cc_index import page_shards
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.sources import WARC_SUFFIXES, download_key, download_source, parse_registry, registry_key
from mella_assets.crawl.warc import WarcStats
from mella_assets.languages import Language
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.lake import LakeStore, file_fingerprint
from mella_assets.lib.watchdog import StageTimeout, check_deadline, deadline_passed
from mella_assets.tables import CRAWL_SOURCE_REJECTS, CRAWL_SOURCES


def landing_prefix(language: str) -> str:
    return f"landing/{language}"


def _sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            check_deadline()  # a large file stops at the stage deadline (StageTimeout), not after it
            digest.update(block)
    return digest.hexdigest()


def sha256_memo_key(name: str, size: int, version: str) -> str:
    """Where the sha256 of one version of a registered file is remembered (``name``: lake key or file URI)."""
    identity = "\n".join((name, str(size), version))
    return f"cache/sha256/{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def source_sha256(store: LakeStore, key: str | None, path: Path | None) -> tuple[str, int]:
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
# so a v3 entry, computed with it, is not the default's result; v5: page/URL/candidate budgets, WARC resync; v6:
# link text, nearby heading and caption markup of each alt text; HTTP heads with bare-LF lines read as pages, records
# swallowed by a too-long Content-Length read).
EXTRACTION_VERSION = "v6"


def extraction_cache_key(sha256: str, nearby_context: bool = False) -> str:
    """Where one WARC's extraction is cached: by extraction version, context mode and the file's sha256."""
    version = f"{EXTRACTION_VERSION}-nearby" if nearby_context else EXTRACTION_VERSION
    return f"cache/raw_crawl/{version}/{sha256}.parquet"


def external_sources(
    language: str, store: LakeStore, make_http: Callable[[], HttpFetcher]
) -> tuple[list[tuple], list[dict]]:
    """(files, rejects) of the registry ``sources/<code>.txt``: files as (uri, lake key, None) for downloads and
    (uri, None, local path) for local files. ``make_http`` builds the downloader, only when a URL is new.

    A download still running at the stage deadline ends there (the fetcher's deadline never passes the stage's),
    and none starts after it: those URLs are ``stage_deadline`` rejects, downloaded by the next run."""
    if not store.exists(registry_key(language)):
        return [], []
    files, rejects = [], []
    http = None
    for entry in parse_registry(store.get_bytes(registry_key(language)).decode("utf-8", errors="replace")):
        if entry.url is not None:
            key = download_key(language, entry.url)
            if not store.exists(key):
                if deadline_passed():
                    rejects.append(_deadline_reject(language, entry.url))
                    continue
                http = http or make_http()
                result = download_source(entry.url, key, store, http)
                if result.error_reason is None and result.sha256 is not None:
                    # Hashed on the way in: registering it costs no second read (nor a deadline's worth of one).
                    size, version = store.fingerprint(key)
                    store.put_bytes(sha256_memo_key(key, size, version), result.sha256.encode("ascii"))
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


def register_sources(
    language: Language, store: LakeStore, previous: pl.DataFrame, make_http: Callable[[], HttpFetcher]
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The ``crawl_sources`` and ``crawl_source_rejects`` frames of a language and how many files are new.

    A file seen before (by sha256) keeps its first ``registered_at``, so rerunning changes nothing. At the stage
    deadline the files registered so far are kept and the rest are ``stage_deadline`` rejects: the rejects are
    computed afresh each run, so the next run registers them."""
    first_seen = dict(zip(previous["sha256"], previous["registered_at"], strict=True)) if previous.height else {}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    files = [
        (store.uri(key), key, None, "crawler" if "/crawl-" in key else "landing")
        for key in store.list(landing_prefix(language.code))
        if key.endswith(WARC_SUFFIXES)
    ]
    external, rejects = external_sources(language.code, store, make_http)
    files += [(uri, key, path, "external") for uri, key, path in external]
    rows = []
    for uri, key, path, origin in files:
        try:
            sha, size = source_sha256(store, key, path)
        except StageTimeout:
            # Not hashed by the stage deadline: registered by the next run (a hash remembered is not redone).
            rejects.append(_deadline_reject(language.code, uri))
            continue
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
    new_files = sum(r["registered_at"] == now for r in rows)
    return frame, pl.DataFrame(rejects, schema=CRAWL_SOURCE_REJECTS.schema), new_files


@dataclass
class Extraction:
    """What :func:`extract_sources` gives: one frame per WARC file done (with its ``warc_uri``), the summed record
    counts, how many files were extracted and how many read from the cache, and the URIs of the files not
    extracted by the stage deadline (extracted by the next run)."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    stats: WarcStats = field(default_factory=WarcStats)
    extracted: int = 0
    cached: int = 0
    unfinished: list[str] = field(default_factory=list)


def extract_sources(sources: pl.DataFrame, store: LakeStore, nearby_context: bool = False) -> Extraction:
    """Every registered WARC's pages, from the cache (keyed by sha256, extraction version and context mode:
    adding one file to a language extracts only that file) or extracted now.

    At the stage deadline the file being extracted is dropped (nothing of it cached) and no other is started;
    the cached ones are still read. Those not extracted are :attr:`Extraction.unfinished`: being absent from the
    cache, the next run extracts them and only them."""
    done = Extraction()
    for row in sources.iter_rows(named=True):
        cache_key = extraction_cache_key(row["sha256"], nearby_context)
        stats_key = cache_key.removesuffix(".parquet") + ".json"
        if store.exists(cache_key) and store.exists(stats_key):
            frame = pl.read_parquet(io.BytesIO(store.get_bytes(cache_key)))
            file_stats = WarcStats(**json.loads(store.get_bytes(stats_key)))
            done.cached += 1
        elif done.unfinished or deadline_passed():
            done.unfinished.append(row["uri"])
            continue
        else:
            file_stats = WarcStats()
            path = store.local_path(row["key"]) if row["key"] else Path(row["path"])
            try:
                # Checked between records (crawl/warc.py): a large file stops at the deadline, not after it.
                frame = extract_warc(path, file_stats, nearby_context=nearby_context)
            except StageTimeout:
                done.unfinished.append(row["uri"])
                continue
            # The frame first, the stats last: a crash between them leaves no half-valid cache entry.
            store.put_bytes(cache_key, _parquet_bytes(frame))
            store.put_bytes(stats_key, json.dumps(file_stats.as_dict()).encode())
            done.extracted += 1
        done.frames.append(frame.with_columns(pl.lit(row["uri"]).alias("warc_uri")))
        for name, value in file_stats.as_dict().items():
            setattr(done.stats, name, getattr(done.stats, name) + value)
    return done


def shard_pages(done: Extraction, shard: int, shards: int) -> tuple[pl.DataFrame | None, int]:
    """The pages of ``done`` (every registered WARC's, in file order) whose site falls in ``shard`` of
    ``shards`` (:func:`~mella_assets.crawl.cc_index.page_shards`), and how many pages belong to other shards.
    None when no file was done. Every shard's run reads the language's extractions (cached per WARC): a WARC
    is extracted once, but its cached pages are read once per shard."""
    if not done.frames:
        return None, 0
    frame = pl.concat(done.frames, how="vertical_relaxed")
    kept = frame.filter(page_shards(frame["domain"], shards) == shard)
    return kept, frame.height - kept.height


def _deadline_reject(language: str, uri: str) -> dict:
    return {"language": language, "uri": uri, "reason": "stage_deadline", "http_status": None}


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_parquet(out, compression="zstd")
    return out.getvalue()
