"""Read HTML responses out of WARC files (gzip or plain), counting everything that is skipped.

Bad input never raises: a truncated gzip member or a malformed record ends that file's iteration and is
counted in :attr:`WarcStats.malformed` (DESIGN §12).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.limitreader import LimitReader
from warcio.recordloader import ArcWarcRecord

HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# A page larger than this is cut: the images of a real page sit well within it, and a hostile record cannot
# make one worker hold gigabytes.
MAX_BODY_BYTES = 8_000_000

_TAIL_PROBE_BYTES = 65_536
# What warcio and the gzip/zlib layer below it raise on truncated or garbled input.
_READ_ERRORS = (
    ArchiveLoadFailed,
    EOFError,
    OSError,
    zlib.error,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
)


@dataclass
class WarcStats:
    """Counts for one or more WARC files: records seen, pages yielded, and why the rest were dropped."""

    records: int = 0
    responses: int = 0
    html_pages: int = 0
    skipped_non_html: int = 0
    skipped_status: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class HtmlResponse:
    """One HTTP 200 HTML response record."""

    warc_uri: str
    record_offset: int
    page_url: str
    http_status: int
    content_type: str
    fetch_date: str
    body: bytes
    x_robots_tag: str = ""


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _warc_uri(path: str | Path) -> str:
    text = str(path)
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


def _is_truncated(record: ArcWarcRecord) -> bool:
    """True when the stream ended before the record's declared Content-Length (a cut file)."""
    raw = record.raw_stream
    return isinstance(raw, LimitReader) and raw.limit > 0


def _has_unread_tail(stream: BinaryIO, records: ArchiveIterator) -> bool:
    """True when bytes other than blank lines follow the last complete record (a cut member or header)."""
    # warcio ends quietly on an incomplete gzip member or record header; only the leftover bytes tell.
    stream.seek(records.offset)
    return bool(stream.read(_TAIL_PROBE_BYTES).strip())


def _html_page(
    records: ArchiveIterator, record: ArcWarcRecord, warc_uri: str, stats: WarcStats, max_body_bytes: int
) -> HtmlResponse | None:
    """The page in ``record`` or None (counted in ``stats``)."""
    if not isinstance(record.raw_stream, LimitReader):
        # No readable Content-Length: the record's header was cut or garbled.
        stats.malformed += 1
        return None
    if record.rec_type != "response":
        stats.records += 1
        return None
    target = record.rec_headers.get_header("WARC-Target-URI") or ""
    if "://" not in target and not target.startswith(("dns:", "whois:")):
        # warcio reads garbage leniently (as an old ARC header): no target URI means no record.
        stats.malformed += 1
        return None
    stats.records += 1
    stats.responses += 1
    headers = record.http_headers
    if headers is None:
        # A response without HTTP headers (dns:, whois:) is not a web page.
        stats.skipped_non_html += 1
        return None
    status_text = headers.get_statuscode()
    status = int(status_text) if status_text and status_text.isdigit() else None
    if status != 200:
        stats.skipped_status += 1
        return None
    content_type = headers.get_header("Content-Type") or ""
    if _media_type(content_type) not in HTML_CONTENT_TYPES:
        stats.skipped_non_html += 1
        return None
    body = record.content_stream().read(max_body_bytes)
    # Only after the body: get_record_offset() reads the record to its end.
    offset = records.get_record_offset()
    if _is_truncated(record):
        stats.malformed += 1
        return None
    return HtmlResponse(
        warc_uri=warc_uri,
        record_offset=offset,
        page_url=target,
        http_status=status,
        content_type=content_type,
        fetch_date=record.rec_headers.get_header("WARC-Date") or "",
        body=body,
        # Repeated headers are joined: each may carry its own directives.
        x_robots_tag=", ".join(v for k, v in headers.headers if k.lower() == "x-robots-tag"),
    )


def iter_html_responses(
    path: str | Path, stats: WarcStats | None = None, *, max_body_bytes: int = MAX_BODY_BYTES
) -> Iterator[HtmlResponse]:
    """Yield the HTTP 200 HTML ``response`` records of a local WARC file; count the skipped in ``stats``."""
    stats = stats if stats is not None else WarcStats()
    warc_uri = _warc_uri(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below, across yields
    except OSError:
        stats.malformed += 1
        return
    try:
        records = ArchiveIterator(stream)
        previous = None
        while True:
            try:
                record = next(records)
            except StopIteration:
                if (previous is not None and _is_truncated(previous)) or _has_unread_tail(stream, records):
                    stats.malformed += 1
                return
            except _READ_ERRORS:
                # The reader cannot resynchronise after a broken record or gzip member: stop this file.
                stats.malformed += 1
                return
            malformed_before = stats.malformed
            try:
                page = _html_page(records, record, warc_uri, stats, max_body_bytes)
            except _READ_ERRORS:
                stats.malformed += 1
                return
            # A record already counted as malformed is not counted again when the file ends.
            previous = record if stats.malformed == malformed_before else None
            if page is not None:
                stats.html_pages += 1
                yield page
    finally:
        stream.close()
