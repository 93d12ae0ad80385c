"""Registered external WARC sources: a plain list per language in the lake (``sources/<code>.txt``).

One entry per line: a local path (absolute, ``~``, or ``file://``), an ``http(s)://`` URL, or a bare Common Crawl
path as listed in a crawl's ``warc.paths.gz`` (``crawl-data/CC-MAIN-2024-33/segments/.../x.warc.gz``, read as
``https://data.commoncrawl.org/<path>``). ``#`` starts a comment.

``sources/all.txt`` holds entries registered for every language of the registry (one list registers a Common Crawl
WARC for all of them): ISO 639-1 codes have two letters, so ``all`` is never a language's list.

URLs are downloaded once into the lake for every language (``external/<hash>.warc.gz``, named by the full URL's
sha256, so a rerun and the other languages find it and a bare Common Crawl path shares the key of its URL) through
the guarded fetcher, streamed to a temporary file with its sha256 computed on the way and resumed after a dropped
connection when the server allows it (a Common Crawl WARC is ~1.0-1.3 GB); only a complete file appears under the
key. Failures become reasons. A file downloaded before under the per-language key (``external/<code>/<hash>...``)
is used where it is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mella_assets.lib.http import DownloadResult, HttpFetcher
from mella_assets.lib.lake import LakeStore

WARC_SUFFIXES = (".warc.gz", ".warc")
COMMON_CRAWL_BASE = "https://data.commoncrawl.org/"
# A path inside Common Crawl's bucket: safe characters only, no "..", a WARC at the end.
_COMMON_CRAWL_PATH = re.compile(r"crawl-data/CC-MAIN-[A-Za-z0-9._/-]+\.warc(\.gz)?")


ALL_LANGUAGES_REGISTRY = "sources/all.txt"


def registry_key(language: str) -> str:
    return f"sources/{language}.txt"


def registry_keys(language: str) -> tuple[str, str]:
    """The lists a language's sources come from: its own, then the one for every language."""
    return registry_key(language), ALL_LANGUAGES_REGISTRY


@dataclass(frozen=True)
class SourceEntry:
    """One registry line: ``url`` for remote files, ``path`` for local ones."""

    text: str
    url: str | None = None
    path: Path | None = None


def parse_registry(text: str) -> list[SourceEntry]:
    """The entries of a registry file, in order, blank lines and comments skipped, duplicates once."""
    entries, seen = [], set()
    for line in text.splitlines():
        value = line.split("#", 1)[0].strip()
        if not value or value in seen:
            continue
        seen.add(value)
        scheme = urlsplit(value).scheme.lower()
        if _COMMON_CRAWL_PATH.fullmatch(value) and ".." not in value.split("/"):
            url = COMMON_CRAWL_BASE + value
            if url not in seen:
                seen.add(url)
                entries.append(SourceEntry(value, url=url))
        elif scheme in {"http", "https"}:
            entries.append(SourceEntry(value, url=value))
        elif scheme == "file":
            entries.append(SourceEntry(value, path=Path(unquote(urlsplit(value).path))))
        else:
            entries.append(SourceEntry(value, path=Path(value).expanduser()))
    return entries


def download_key(url: str) -> str:
    """Lake key of a downloaded source, the same for every language that registers the URL: named by the URL's
    hash (no path from the URL reaches the lake)."""
    return f"external/{_download_name(url)}"


def legacy_download_key(language: str, url: str) -> str:
    """Where a language's download of ``url`` was stored before downloads were shared (one copy per language)."""
    return f"external/{language}/{_download_name(url)}"


def _download_name(url: str) -> str:
    suffix = ".warc" if urlsplit(url).path.endswith(".warc") else ".warc.gz"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:24]}{suffix}"


def download_source(url: str, key: str, store: LakeStore, fetcher: HttpFetcher) -> DownloadResult:
    """Download a remote WARC into the lake under ``key``; the result's ``error_reason`` is a fetcher reason code.

    The body streams into a temporary file beside the key's local file (the S3 lake's cache for S3), which the
    lake then takes whole; on failure it is removed, so nothing partial is ever under ``key``."""
    tmp = store.temp_path(key)
    try:
        result = fetcher.download(url, tmp)
        if result.error_reason is None:
            store.put_file(key, tmp, move=True)
        return result
    finally:
        tmp.unlink(missing_ok=True)
