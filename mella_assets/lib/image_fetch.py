"""Download, validate, deduplicate and store the images of one language: the logic of the ``images`` asset.

Rows reused from the previous run (their blob still in the lake) are not fetched again. Every URL ends as one
row of ``kept`` or of ``rejects`` (with ``reason``, ``detail`` and ``http_status``); exact and near duplicates
stay in ``kept`` pointing at the first (canonical) image, so their alt texts survive while the dataset holds
one copy of the picture (column ``duplicate``: ``exact`` / ``near`` / null).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_NEAR_DUPLICATE_BITS,
    ImageReject,
    image_key,
    mark_duplicates,
    validate_image,
)
from mella_assets.lib.watchdog import map_with_deadline

IMAGES_SCHEMA = {
    "language": pl.String,
    "image_url": pl.String,
    "image_sha256": pl.String,
    "phash": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "format": pl.String,
    "bytes": pl.Int64,
    "image_key": pl.String,
    "http_status": pl.Int64,
    "final_url": pl.String,
    "fetched_sha256": pl.String,
    "duplicate": pl.String,
}
IMAGE_REJECTS_SCHEMA = {
    "language": pl.String,
    "image_url": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "http_status": pl.Int64,
}


@dataclass(frozen=True)
class ImageLimits:
    """What an image must be to be kept (documented defaults; the ``fetcher`` resource sets them)."""

    min_side: int = 64
    max_pixels: int = 40_000_000
    max_side_out: int = 1024
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS


@dataclass
class ImageFetchOutcome:
    kept: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


def fetch_images(
    language: str,
    urls: Sequence[str],
    fetcher: HttpFetcher,
    *,
    exists: Callable[[str], bool],
    put: Callable[[str, bytes], object],
    previous: pl.DataFrame | None = None,
    limits: ImageLimits = ImageLimits(),
    max_workers: int = 8,
) -> ImageFetchOutcome:
    """Fetch ``urls`` (distinct, in order) and return the ``images`` / ``image_rejects`` frames of a language."""
    reusable: dict[str, dict] = {}
    wanted = set(urls)
    if previous is not None and previous.height and "fetched_sha256" in previous.columns:
        for row in previous.iter_rows(named=True):
            if row["image_url"] in wanted and row["duplicate"] is None and exists(row["image_key"]):
                reusable[row["image_url"]] = row
    to_fetch = [url for url in urls if url not in reusable]
    # Bounded by the stage deadline as a whole, not only by each request's timeout (lib/watchdog.py).
    results = {r.url: r for r in map_with_deadline(fetcher.fetch, to_fetch, max_workers)}
    rows: list[dict] = []
    rejects: list[dict] = []
    bytes_downloaded = 0
    encoded: dict[str, bytes] = {}  # stored after deduplication, so a near duplicate leaves no blob
    for url in urls:
        if url in reusable:
            rows.append({**reusable[url], "language": language})
            continue
        result = results[url]
        if result.error_reason or result.body is None:
            rejects.append(_reject(language, url, result.error_reason or "request_error", None, result.status))
            continue
        bytes_downloaded += len(result.body)
        checked = validate_image(
            result.body,
            min_side=limits.min_side,
            max_pixels=limits.max_pixels,
            max_side_out=limits.max_side_out,
            max_aspect_ratio=limits.max_aspect_ratio,
        )
        if isinstance(checked, ImageReject):
            rejects.append(_reject(language, url, checked.reason, checked.detail, result.status))
            continue
        key = image_key(checked.sha256, checked.ext)
        encoded[key] = checked.data
        rows.append(
            {
                "language": language,
                "image_url": url,
                "image_sha256": checked.sha256,
                "phash": checked.phash,
                "width": checked.width,
                "height": checked.height,
                "format": checked.format,
                "bytes": checked.bytes_in,
                "image_key": key,
                "http_status": result.status,
                "final_url": result.final_url,
                "fetched_sha256": checked.sha256,
                "duplicate": None,
            }
        )
    marks = mark_duplicates([r["fetched_sha256"] for r in rows], [r["phash"] for r in rows], limits.near_duplicate_bits)
    canonical = {r["fetched_sha256"]: r for r, (reason, _) in zip(rows, marks, strict=True) if reason is None}
    for row, (reason, sha) in zip(rows, marks, strict=True):
        if reason is not None and sha is not None:
            first = canonical[sha]
            for column in ("image_sha256", "phash", "width", "height", "format", "image_key"):
                row[column] = first[column]
            row["duplicate"] = "exact" if reason == "duplicate_image" else "near"
        elif row["image_key"] in encoded and not exists(row["image_key"]):
            put(row["image_key"], encoded[row["image_key"]])
    kept = pl.DataFrame(rows, schema=IMAGES_SCHEMA) if rows else pl.DataFrame(schema=IMAGES_SCHEMA)
    reject_frame = (
        pl.DataFrame(rejects, schema=IMAGE_REJECTS_SCHEMA) if rejects else pl.DataFrame(schema=IMAGE_REJECTS_SCHEMA)
    )
    stats = {
        "urls": len(urls),
        "fetched": len(to_fetch),
        "reused": len(reusable),
        "bytes_downloaded": bytes_downloaded,
        "exact_duplicates": sum(reason == "duplicate_image" for reason, _ in marks),
        "near_duplicates": sum(reason == "near_duplicate_image" for reason, _ in marks),
    }
    return ImageFetchOutcome(kept=kept, rejects=reject_frame, stats=stats)


def _reject(language: str, url: str, reason: str, detail: str | None, status: int | None) -> dict:
    return {"language": language, "image_url": url, "reason": reason, "detail": detail, "http_status": status}
