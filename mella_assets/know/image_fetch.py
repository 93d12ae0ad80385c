"""Download, validate, deduplicate and store the images of one language: the logic of the ``images`` asset.

Every URL ends as one row of ``kept`` or of ``rejects`` (with ``reason``, ``detail``, ``http_status`` and
``limits_hash``, the limits it was decided under); exact and near duplicates stay in ``kept`` pointing at the
first (canonical) image, so their alt texts survive while the dataset holds one copy of the picture (column
``duplicate``: ``exact`` / ``near`` / null; ``fetched_sha256`` / ``fetched_phash``: the row's own picture).

On a rerun nothing already known is fetched again: kept rows (duplicates included) whose blob is still in the lake
are reused and deduplicated again from their own hashes, and a reject that the same URL would meet again
(:data:`PERMANENT_REJECTS`, or :data:`LIMIT_REJECTS` under unchanged limits) is carried over as it was. Transient
failures (timeouts, connection errors, 429/5xx, 403, robots and address refusals) are retried; so is everything
with ``retry_rejected``.

Every fetch ends within the fetcher's ``total_timeout_s`` (a slow or dripping host is a ``timeout`` reject, never a
hung stage). When the stage's own deadline (``MELLA_STAGE_TIMEOUT_S_IMAGES``) comes first, the images finished by
then are stored and kept as usual, and the URLs not finished are rejects with the reason ``stage_deadline``
(retried by the next run), so a deadline costs those records, not the partition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import PIL
import polars as pl

from mella_assets.know.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_NEAR_DUPLICATE_BITS,
    ImageReject,
    ValidatedImage,
    image_key,
    mark_duplicates,
    validate_image,
)
from mella_assets.languages import Language
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.progress import SILENT, ProgressLog
from mella_assets.lib.watchdog import UNFINISHED, current_deadline, map_until_deadline
from mella_assets.tables import IMAGE_REJECTS, IMAGES

IMAGES_SCHEMA = dict(IMAGES.columns)
IMAGE_REJECTS_SCHEMA = dict(IMAGE_REJECTS.columns)
# What the same URL answers again next time: gone (404/410), a URL we refuse by its text alone, a page or other
# non-image served in place of the image. 403 is not here: hotlink and bot rules change and are often per client;
# nor robots_disallowed / blocked_address: robots.txt, DNS and our allowed networks change, and deciding them again
# costs one robots.txt per host (or the redirect hop), not the image.
PERMANENT_REJECTS = frozenset(
    {
        "http_error_404",
        "http_error_410",
        "invalid_url",
        "unsupported_scheme",
        "url_has_credentials",
        "url_too_long",
        "unexpected_content_type",
    }
)
# Decided by our limits (and decoder) on the bytes the URL served: permanent while ``limits_hash`` is unchanged.
LIMIT_REJECTS = frozenset(
    {"too_large", "pixel_bomb", "not_decodable", "unsupported_format", "too_small", "bad_aspect_ratio"}
)
_DUPLICATE_COLUMNS = ("image_sha256", "phash", "width", "height", "format", "image_key")


@dataclass(frozen=True)
class ImageLimits:
    """What an image must be to be kept (documented defaults; the ``fetcher`` resource sets them)."""

    min_side: int = 64
    max_pixels: int = 40_000_000
    max_side_out: int = 1024
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS


def limits_hash(limits: ImageLimits, max_bytes: int) -> str:
    """A short, stable id of everything a :data:`LIMIT_REJECTS` reason depends on (limits, body cap, Pillow)."""
    decided_by = {
        "min_side": limits.min_side,
        "max_pixels": limits.max_pixels,
        "max_aspect_ratio": limits.max_aspect_ratio,
        "max_bytes": max_bytes,
        "pillow": PIL.__version__,
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ImageFetchOutcome:
    kept: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Download:
    """One URL fetched and validated (in a worker thread); the body itself is not kept."""

    status: int | None
    final_url: str
    error_reason: str | None
    bytes_in: int
    checked: ValidatedImage | ImageReject | None


def fetch_images(
    language: Language,
    urls: Sequence[str],
    fetcher: HttpFetcher,
    *,
    exists: Callable[[str], bool],
    put: Callable[[str, bytes], object],
    previous: pl.DataFrame | None = None,
    previous_rejects: pl.DataFrame | None = None,
    limits: ImageLimits = ImageLimits(),
    max_workers: int = 8,
    retry_rejected: bool = False,
    progress: ProgressLog = SILENT,
) -> ImageFetchOutcome:
    """Fetch ``urls`` (distinct, in order) and return the ``images`` / ``image_rejects`` frames of a language.

    ``previous`` / ``previous_rejects``: the last run's tables of the language, reused as the module says;
    ``progress``: where the download loop reports (``images: done/total``)."""
    code = language.code
    wanted = set(urls)
    fingerprint = limits_hash(limits, fetcher.max_bytes)
    reusable = _reusable_rows(previous, wanted, exists)
    earlier_rejects = _previous_rejects(previous_rejects, wanted - reusable.keys())
    carried = {} if retry_rejected else _carried_rejects(earlier_rejects, fingerprint)

    def download(url: str) -> _Download:
        try:
            return fetch_and_validate(url)
        finally:
            reporter.advance()  # from the worker thread: Progress is thread-safe

    def fetch_and_validate(url: str) -> _Download:
        # Validated here, in the worker: Pillow releases the GIL while it decodes and encodes.
        result = fetcher.fetch(url)
        if result.error_reason or result.body is None:
            return _Download(result.status, result.final_url, result.error_reason or "request_error", 0, None)
        checked = validate_image(
            result.body,
            min_side=limits.min_side,
            max_pixels=limits.max_pixels,
            max_side_out=limits.max_side_out,
            max_aspect_ratio=limits.max_aspect_ratio,
        )
        return _Download(result.status, result.final_url, None, len(result.body), checked)

    downloads: dict[str, _Download] = {}
    unfinished: set[str] = set()
    pending = [url for url in urls if url not in reusable and url not in carried]
    reporter = progress.loop("images", len(urls), unit="URLs")
    reporter.start(already_done=len(urls) - len(pending))  # stored or carried over: nothing to fetch
    while True:
        # Bounded by the stage deadline as a whole, not only by each request's timeout (lib/watchdog.py): what is
        # not done by then is a retryable reject, what is done is kept.
        for url, done in zip(pending, map_until_deadline(download, pending, max_workers), strict=True):
            if done is UNFINISHED:
                unfinished.add(url)
            else:
                downloads[url] = done
        rows = [
            {**reusable[url], "language": code} if url in reusable else _kept_row(code, url, downloads[url])
            for url in urls
            if url in reusable or (url in downloads and isinstance(downloads[url].checked, ValidatedImage))
        ]
        marks = mark_duplicates(
            [r["fetched_sha256"] for r in rows], [r["fetched_phash"] for r in rows], limits.near_duplicate_bits
        )
        # A reused duplicate that is now the first of its kind (its canonical URL gone, or the order changed)
        # holds the canonical's columns and maybe no blob of its own: fetch it again (once: then it is not reused).
        pending = [
            r["image_url"] for r, (reason, _) in zip(rows, marks, strict=True) if reason is None and r["duplicate"]
        ]
        if not pending:
            break
        for url in pending:
            del reusable[url]
        reporter.total += len(pending)  # fetched once more
    reporter.finish()
    canonical = {r["fetched_sha256"]: r for r, (reason, _) in zip(rows, marks, strict=True) if reason is None}
    for row, (reason, sha) in zip(rows, marks, strict=True):
        if reason is not None and sha is not None:
            first = canonical[sha]
            for column in _DUPLICATE_COLUMNS:
                row[column] = first[column]
            row["duplicate"] = "exact" if reason == "duplicate_image" else "near"
        else:
            row["duplicate"] = None
            # Stored after deduplication, so a near duplicate leaves no blob.
            if row["image_url"] in downloads and not exists(row["image_key"]):
                put(row["image_key"], downloads[row["image_url"]].checked.data)
    rejects = []
    deadline = current_deadline()
    unfinished_detail = f"not fetched by the stage deadline ({deadline.setting})" if deadline else None
    for url in urls:
        if url in carried:
            rejects.append({**carried[url], "language": code})
        elif url in unfinished:
            rejects.append(_reject(code, url, "stage_deadline", unfinished_detail, None, fingerprint))
        elif url in downloads and not isinstance(downloads[url].checked, ValidatedImage):
            failed = downloads[url]
            reason, detail = failed.error_reason, None
            if isinstance(failed.checked, ImageReject):
                reason, detail = failed.checked.reason, failed.checked.detail
            elif reason == "stage_deadline":
                # The fetch saw the stage end itself (lib/http.py) just before map_until_deadline gave up on it.
                detail = unfinished_detail
            rejects.append(_reject(code, url, reason, detail, failed.status, fingerprint))
    kept = pl.DataFrame(rows, schema=IMAGES_SCHEMA) if rows else pl.DataFrame(schema=IMAGES_SCHEMA)
    reject_frame = (
        pl.DataFrame(rejects, schema=IMAGE_REJECTS_SCHEMA) if rejects else pl.DataFrame(schema=IMAGE_REJECTS_SCHEMA)
    )
    stats = {
        "urls": len(urls),
        "fetched": len(downloads),
        "reused": len(reusable),
        "rejects_carried_over": len(carried),
        "rejects_retried": sum(url in downloads for url in earlier_rejects),
        "bytes_downloaded": sum(d.bytes_in for d in downloads.values()),
        "exact_duplicates": sum(reason == "duplicate_image" for reason, _ in marks),
        "near_duplicates": sum(reason == "near_duplicate_image" for reason, _ in marks),
        "unfinished_at_deadline": len(unfinished),
    }
    return ImageFetchOutcome(kept=kept, rejects=reject_frame, stats=stats)


def _reusable_rows(previous: pl.DataFrame | None, wanted: set[str], exists: Callable[[str], bool]) -> dict[str, dict]:
    """The previous run's kept rows of ``wanted`` URLs whose blob is still stored, keyed by URL.

    A table from before ``fetched_phash`` holds a duplicate's own hash nowhere: such rows are fetched once more."""
    if previous is None or not previous.height or "fetched_sha256" not in previous.columns:
        return {}
    reusable = {}
    for row in previous.iter_rows(named=True):
        own_phash = row.get("fetched_phash") or (row["phash"] if row["duplicate"] is None else None)
        if row["image_url"] in wanted and own_phash is not None and exists(row["image_key"]):
            reusable[row["image_url"]] = {**{c: row.get(c) for c in IMAGES_SCHEMA}, "fetched_phash": own_phash}
    return reusable


def _previous_rejects(previous: pl.DataFrame | None, wanted: set[str]) -> dict[str, dict]:
    """The previous run's reject rows of ``wanted`` URLs, keyed by URL, in the current schema."""
    if previous is None or not previous.height or "reason" not in previous.columns:
        return {}
    return {
        row["image_url"]: {c: row.get(c) for c in IMAGE_REJECTS_SCHEMA}
        for row in previous.iter_rows(named=True)
        if row["image_url"] in wanted
    }


def _carried_rejects(previous: dict[str, dict], fingerprint: str) -> dict[str, dict]:
    """The rejects the same URL would meet again (see :data:`PERMANENT_REJECTS`, :data:`LIMIT_REJECTS`)."""
    return {
        url: row
        for url, row in previous.items()
        if row["reason"] in PERMANENT_REJECTS or (row["reason"] in LIMIT_REJECTS and row["limits_hash"] == fingerprint)
    }


def _kept_row(language: str, url: str, download: _Download) -> dict:
    checked = download.checked
    return {
        "language": language,
        "image_url": url,
        "image_sha256": checked.sha256,
        "phash": checked.phash,
        "width": checked.width,
        "height": checked.height,
        "format": checked.format,
        "bytes": checked.bytes_in,
        "image_key": image_key(checked.sha256, checked.ext),
        "http_status": download.status,
        "final_url": download.final_url,
        "fetched_sha256": checked.sha256,
        "duplicate": None,
        "fetched_phash": checked.phash,
    }


def _reject(language: str, url: str, reason: str, detail: str | None, status: int | None, limits: str) -> dict:
    return {
        "language": language,
        "image_url": url,
        "reason": reason,
        "detail": detail,
        "http_status": status,
        "limits_hash": limits,
    }
