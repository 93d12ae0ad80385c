"""Which landing files are new since the sensor last looked."""

from __future__ import annotations

from collections.abc import Iterable

from mella_assets.crawl.sources import WARC_SUFFIXES


def landing_language(key: str) -> str | None:
    """The language of a landing key ``landing/<code>/<file>.warc[.gz]``, None for anything else."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "landing" and key.endswith(WARC_SUFFIXES):
        return parts[1]
    return None


def new_landing_files(
    listing: Iterable[tuple[str, int]], seen: dict[str, int], languages: Iterable[str]
) -> dict[str, list[str]]:
    """New or changed (by size) WARC files per configured language, from (key, size) pairs and the cursor."""
    wanted = set(languages)
    found: dict[str, list[str]] = {}
    for key, size in listing:
        language = landing_language(key)
        if language in wanted and seen.get(key) != size:
            found.setdefault(language, []).append(key)
    return found
