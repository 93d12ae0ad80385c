"""Registered external WARC sources: a plain list per language in the lake (``sources/<code>.txt``).

One entry per line: a local path (absolute, ``~``, or ``file://``) or an ``http(s)://`` URL (e.g. a Common
Crawl WARC). ``#`` starts a comment. URLs are downloaded once into the lake (``external/<code>/<hash>.warc.gz``,
named by the URL's sha256 so a rerun finds it) through the guarded fetcher; failures become reasons.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mella_assets.lib.http import HttpFetcher

WARC_SUFFIXES = (".warc.gz", ".warc")


def registry_key(language: str) -> str:
    return f"sources/{language}.txt"


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
        if scheme in {"http", "https"}:
            entries.append(SourceEntry(value, url=value))
        elif scheme == "file":
            entries.append(SourceEntry(value, path=Path(unquote(urlsplit(value).path))))
        else:
            entries.append(SourceEntry(value, path=Path(value).expanduser()))
    return entries


def download_key(language: str, url: str) -> str:
    """Lake key of a downloaded source: named by the URL's hash (no path from the URL reaches the lake)."""
    suffix = ".warc" if urlsplit(url).path.endswith(".warc") else ".warc.gz"
    return f"external/{language}/{hashlib.sha256(url.encode()).hexdigest()[:24]}{suffix}"


def download_source(url: str, fetcher: HttpFetcher) -> tuple[bytes | None, str | None, int | None]:
    """``(body, reason, http_status)`` for a remote WARC: body on success, else a fetcher reason code."""
    result = fetcher.fetch(url, check_robots=False, any_content_type=True)
    return result.body, result.error_reason, result.status
