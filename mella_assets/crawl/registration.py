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
from mella_assets.crawl.sources import (
    WARC_SUFFIXES,
    download_key,
    download_source,
    legacy_download_key,
    parse_registry,
    registry_keys,
)
from mella_assets.crawl.warc import WarcStats
from mella_assets.languages import LANGUAGES, REGISTRY, Language
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.lake import LakeStore, file_fingerprint
from mella_assets.lib.page_language import declared_mismatch
from mella_assets.lib.watchdog import StageTimeout, check_deadline, deadline_passed
from mella_assets.tables import CRAWL_SOURCE_REJECTS, CRAWL_SOURCES, RAW_CRAWL


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


def _cache_folder(nearby_context: bool) -> str:
    version = f"{EXTRACTION_VERSION}-nearby" if nearby_context else EXTRACTION_VERSION
    return f"cache/raw_crawl/{version}"


def extraction_cache_key(sha256: str, nearby_context: bool = False) -> str:
    """Where an older run cached one WARC's whole extraction (by extraction version, context mode and the file's
    sha256); :func:`extract_sources` splits such an entry into shard slices instead of extracting again."""
    return f"{_cache_folder(nearby_context)}/{sha256}.parquet"


def slices_prefix(sha256: str, shards: int, nearby_context: bool = False) -> str:
    """Where one WARC's extraction is cached split into ``shards`` slices: ``<shard>.parquet`` per shard that
    has pages, and ``index.json`` (the file's record counts and pages per shard), written last."""
    return f"{_cache_folder(nearby_context)}/{sha256}/shards-{shards}"


def stored_download(store: LakeStore, language: str, url: str) -> str | None:
    """The lake key holding ``url``'s download, or None: the shared key, else a copy an older run stored per
    language (this language's first, then any other's), used where it is rather than downloaded again."""
    others = sorted({*REGISTRY, *LANGUAGES} - {language})
    legacy = [legacy_download_key(code, url) for code in (language, *others)]
    return next((key for key in (download_key(url), *legacy) if store.exists(key)), None)


def external_sources(
    language: str, store: LakeStore, make_http: Callable[[], HttpFetcher]
) -> tuple[list[tuple], list[dict]]:
    """(files, rejects) of the registries ``sources/<code>.txt`` and ``sources/all.txt`` (an entry in both counts
    once): files as (uri, lake key, None) for downloads and (uri, None, local path) for local files. ``make_http``
    builds the downloader, only when a URL is new to the lake: a URL another language registered is not
    downloaded again.

    A download still running at the stage deadline ends there (the fetcher's deadline never passes the stage's),
    and none starts after it: those URLs are ``stage_deadline`` rejects, downloaded by the next run."""
    texts = [
        store.get_bytes(key).decode("utf-8", errors="replace") for key in registry_keys(language) if store.exists(key)
    ]
    files, rejects = [], []
    http = None
    for entry in parse_registry("\n".join(texts)):
        if entry.url is not None:
            key = stored_download(store, language, entry.url) or download_key(entry.url)
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
    """What :func:`extract_sources` gives: one frame per WARC file done with pages in the shard (with its
    ``warc_uri``), the summed record counts of the files done (whole files), how many of their pages belong to
    other shards, how many files were extracted and how many read from the cache, and the URIs of the files not
    extracted by the stage deadline (extracted by the next run)."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    stats: WarcStats = field(default_factory=WarcStats)
    other_shard: int = 0
    extracted: int = 0
    cached: int = 0
    unfinished: list[str] = field(default_factory=list)

    def pages(self) -> pl.DataFrame | None:
        """The shard's pages of every file done, in file order; None when none has any."""
        return pl.concat(self.frames, how="vertical_relaxed") if self.frames else None


def extract_sources(
    sources: pl.DataFrame, store: LakeStore, nearby_context: bool = False, *, shard: int = 0, shards: int = 1
) -> Extraction:
    """The pages of every registered WARC whose site falls in ``shard`` of ``shards``
    (:func:`~mella_assets.crawl.cc_index.page_shards`), read from the file's cached slice for that shard or
    extracted now.

    A file is extracted once, whatever the language or shard asking: its pages are split by shard and each
    slice cached by extraction version, context mode, sha256 and shard count (:func:`slices_prefix`), so a shard
    run reads only its own slice of each file and its memory is bounded by the shard, not by the language's
    files. A file cached whole by an older run, or split for another shard count, is split again rather than
    extracted. At the stage deadline the file being extracted is dropped (nothing of it cached) and no other is
    started; the cached ones are still read. Those not extracted are :attr:`Extraction.unfinished`: being
    absent from the cache, the next run extracts them and only them."""
    done = Extraction()
    for row in sources.iter_rows(named=True):
        prefix = slices_prefix(row["sha256"], shards, nearby_context)
        if store.exists(f"{prefix}/index.json"):
            index = json.loads(store.get_bytes(f"{prefix}/index.json"))
            pages = index["pages"].get(str(shard), 0)
            frame = _read_parquet(store, f"{prefix}/{shard}.parquet") if pages else None
            done.cached += 1
        else:
            cached = _whole_extraction(store, row["sha256"], nearby_context)
            if cached is None and (done.unfinished or deadline_passed()):
                done.unfinished.append(row["uri"])
                continue
            if cached is None:
                file_stats = WarcStats()
                path = store.local_path(row["key"]) if row["key"] else Path(row["path"])
                try:
                    # Checked between records (crawl/warc.py): a large file stops at the deadline, not after it.
                    whole = extract_warc(path, file_stats, nearby_context=nearby_context)
                except StageTimeout:
                    done.unfinished.append(row["uri"])
                    continue
                cached = whole, file_stats.as_dict()
                done.extracted += 1
            else:
                done.cached += 1
            index, frame = _put_slices(store, prefix, *cached, shards, shard)
        if frame is not None:
            done.frames.append(frame.with_columns(pl.lit(row["uri"]).alias("warc_uri")))
        done.other_shard += sum(index["pages"].values()) - (frame.height if frame is not None else 0)
        for name, value in index["stats"].items():
            setattr(done.stats, name, getattr(done.stats, name) + value)
    return done


def _whole_extraction(store: LakeStore, sha256: str, nearby_context: bool) -> tuple[pl.DataFrame, dict] | None:
    """A file's whole extraction and record counts cached by an older run: cached whole, or split for any shard
    count (its slices put together in file order, by record offset); None when the file was never extracted."""
    whole = extraction_cache_key(sha256, nearby_context)
    stats_key = whole.removesuffix(".parquet") + ".json"
    if store.exists(whole) and store.exists(stats_key):
        return _read_parquet(store, whole), json.loads(store.get_bytes(stats_key))
    for index_key in store.list(f"{_cache_folder(nearby_context)}/{sha256}/", "index.json"):
        prefix = index_key.removesuffix("/index.json")
        index = json.loads(store.get_bytes(index_key))
        frames = [_read_parquet(store, f"{prefix}/{shard}.parquet") for shard, pages in index["pages"].items() if pages]
        whole_frame = pl.concat([RAW_CRAWL.empty().drop("language"), *frames], how="vertical_relaxed")
        return whole_frame.sort("record_offset", maintain_order=True), index["stats"]
    return None


def _put_slices(
    store: LakeStore, prefix: str, frame: pl.DataFrame, stats: dict, shards: int, shard: int
) -> tuple[dict, pl.DataFrame | None]:
    """Cache ``frame`` (one file's pages) split by shard under ``prefix``, the index last (a crash before it leaves
    no entry: the next run splits again); gives the index and ``shard``'s slice (None when it has no page)."""
    parts = frame.with_columns(page_shards(frame["domain"], shards).alias("_shard")).partition_by(
        "_shard", as_dict=True, include_key=False, maintain_order=True
    )
    for (number,), part in parts.items():
        store.put_bytes(f"{prefix}/{number}.parquet", _parquet_bytes(part))
    index = {"stats": stats, "pages": {str(number): part.height for (number,), part in parts.items()}}
    store.put_bytes(f"{prefix}/index.json", json.dumps(index).encode())
    return index, parts.get((shard,))


def route_by_declared_language(pages: pl.DataFrame, language: Language) -> tuple[pl.DataFrame, int]:
    """The pages that may be ``language``'s, and how many were left out: a page whose own declaration
    (``<html lang>``, else ``og:locale``) names another language is not its page, exactly the page-level
    condition of the alt-text gate (:func:`~mella_assets.lib.page_language.declared_mismatch`). Silent pages, English
    ones (an unchanged CMS default) and those whose two declarations disagree stay: their text decides."""
    declarations = pages.select("html_lang", "og_locale")
    other = {(html, og): declared_mismatch(html, og, language) for html, og in declarations.unique().iter_rows()}
    keep = pl.Series([not other[pair] for pair in declarations.iter_rows()], dtype=pl.Boolean)
    kept = pages.filter(keep)
    return kept, pages.height - kept.height


def _deadline_reject(language: str, uri: str) -> dict:
    return {"language": language, "uri": uri, "reason": "stage_deadline", "http_status": None}


def _read_parquet(store: LakeStore, key: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(store.get_bytes(key)))


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_parquet(out, compression="zstd")
    return out.getvalue()
