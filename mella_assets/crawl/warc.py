"""Read HTML responses out of WARC files (gzip or plain), counting everything that is skipped.

Records are read with FastWARC (~4x warcio's records/s, ``benchmarks/bench_extraction.py``). Bad input never
raises: a truncated or corrupt gzip member, a record with oversized headers or a wrong Content-Length is counted in
:attr:`WarcStats.malformed`, and reading resumes at the next record start after it (the next gzip member that opens
with ``WARC/1.``, or in a plain file the next line starting ``WARC/1.``; :attr:`WarcStats.resynced` counts those
resumptions), so one bad record costs that record, not the rest of a 1 GB file.
FastWARC yields a record cut by the end of the file as if it were whole,
so a record counts only once the next one has been found, and the last one only once :func:`_tail_state` has
checked that the file holds all of it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# A page larger than this is cut: the images of a real page sit well within it, and a hostile record cannot
# make one worker hold gigabytes.
MAX_BODY_BYTES = 8_000_000

# What FastWARC and the zlib layer below it raise on truncated or garbled input.
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError, IndexError, KeyError, TypeError, AttributeError)
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 1 << 16
_MAX_HEADER_BYTES = 1 << 16
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_WARC_VERSION = b"WARC/1."
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


@dataclass
class WarcStats:
    """Counts for one or more WARC files: records seen, pages yielded, and why the rest were dropped."""

    records: int = 0
    responses: int = 0
    html_pages: int = 0
    skipped_non_html: int = 0
    skipped_status: int = 0
    malformed: int = 0
    resynced: int = 0  # times reading resumed at a later record after a malformed stretch
    # Pages and candidates over the extraction budgets (crawl/html/extract.py), by reason.
    pages_too_complex: int = 0
    pages_url_too_long: int = 0
    candidates_url_too_long: int = 0
    candidates_over_budget: int = 0

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


# -- HTTP payload decoding (what warcio's content_stream() did): chunked transfer, then content encoding ---------
def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked transfer encoding, or None if ``data`` is not chunked."""
    out, pos = [], 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        # ASCII hex digits only: int(..., 16) also takes a sign, underscores and spaces, and a negative size sent
        # this loop back to an earlier line forever.
        size_field = data[pos:line_end].split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_field):
            return None
        size = int(size_field, 16)
        if size == 0:
            return b"".join(out)
        start = line_end + 2
        if start + size > len(data):
            return None
        out.append(data[start : start + size])
        pos = start + size + 2


def _decompress(data: bytes, encoding: str, max_bytes: int) -> bytes | None:
    if encoding in {"gzip", "x-gzip"}:
        wbits = 47  # gzip or zlib header
    elif encoding == "deflate":
        wbits = 15
    else:
        return None
    try:
        return zlib.decompressobj(wbits).decompress(data, max_bytes)
    except zlib.error:
        if encoding == "deflate":
            try:  # servers often send raw deflate without the zlib header
                return zlib.decompressobj(-15).decompress(data, max_bytes)
            except zlib.error:
                return None
        return None


def _decoded_body(record: WarcRecord, body: bytes, max_bytes: int) -> bytes:
    """``body`` without its transfer and content encodings; left as it is where they do not apply (as warcio)."""
    headers = record.http_headers
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        body = _dechunk(body) or body
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding and encoding != "identity":
        body = _decompress(body, encoding, max_bytes) or body
    return body


# -- records -------------------------------------------------------------------------------------------------
@dataclass
class _Record:
    """What one record adds to :class:`WarcStats` (counter names) and the page it holds, if any."""

    counts: tuple[str, ...]
    offset: int
    page: HtmlResponse | None = None


def _read_record(record: WarcRecord, warc_uri: str, max_body_bytes: int) -> _Record:
    offset = record.stream_pos
    if record.record_type != WarcRecordType.response:
        return _Record(("records",), offset)
    target = record.headers.get("WARC-Target-URI") or ""
    if "://" not in target and not target.startswith(("dns:", "whois:")):
        return _Record(("malformed",), offset)
    if not record.is_http:
        # A response without HTTP headers (dns:, whois:) is not a web page.
        return _Record(("records", "responses", "skipped_non_html"), offset)
    headers = record.http_headers
    status = headers.status_code
    if status != 200:
        return _Record(("records", "responses", "skipped_status"), offset)
    content_type = headers.get("Content-Type") or ""
    if _media_type(content_type) not in HTML_CONTENT_TYPES:
        return _Record(("records", "responses", "skipped_non_html"), offset)
    body = _decoded_body(record, record.reader.read(max_body_bytes), max_body_bytes)
    page = HtmlResponse(
        warc_uri=warc_uri,
        record_offset=offset,
        page_url=target,
        http_status=status,
        content_type=content_type,
        fetch_date=record.headers.get("WARC-Date") or "",
        body=body,
        # Repeated headers are joined: each may carry its own directives.
        x_robots_tag=", ".join(value for name, value in headers if name.lower() == "x-robots-tag"),
    )
    return _Record(("records", "responses", "html_pages"), offset, page)


def _count(stats: WarcStats, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(stats, name, getattr(stats, name) + 1)


# -- the end of a file ---------------------------------------------------------------------------------------
class _Cut(Exception):
    """The stream ends inside a gzip member, or holds bytes that are not gzip."""


def _uncompressed(stream: BinaryIO) -> Iterator[bytes]:
    """The rest of ``stream``, gunzipped member by member if it starts with gzip's magic bytes."""
    position = stream.tell()
    gzipped = stream.read(2) == _GZIP_MAGIC
    stream.seek(position)
    if not gzipped:
        yield from iter(lambda: stream.read(_CHUNK_BYTES), b"")
        return
    member, started = zlib.decompressobj(31), False
    for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
        while chunk:
            try:
                yield member.decompress(chunk)
            except zlib.error as error:
                raise _Cut from error
            started = True
            if not member.eof:
                break
            chunk, member, started = member.unused_data, zlib.decompressobj(31), False
    if started:
        raise _Cut


def _tail_state(stream: BinaryIO, offset: int) -> tuple[bool, bool]:
    """``(whole, clean)`` for the last record read, which starts at ``offset``: whether the file holds all of it
    (its declared Content-Length), and whether nothing but blank lines follows it.

    In a WARC gzipped as one member, record offsets are not member starts: then the whole file is checked and
    ``whole`` says whether its last record is complete."""
    stream.seek(offset)
    one_member = False
    if stream.read(2) != _GZIP_MAGIC:
        stream.seek(0)
        one_member = stream.read(2) == _GZIP_MAGIC
        offset = 0 if one_member else offset
    stream.seek(offset)
    buffer, need, whole_records = b"", None, 0  # need: bytes of the current record still to come
    try:
        for chunk in _uncompressed(stream):
            buffer += chunk
            while True:
                if need is not None:
                    taken = min(need, len(buffer))
                    buffer, need = buffer[taken:], need - taken
                    if need:
                        break
                    need, whole_records = None, whole_records + 1
                buffer = buffer.lstrip(b"\r\n")
                if not buffer:
                    break
                header_end = buffer.find(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(buffer, 0, header_end + 2) if header_end >= 0 else None
                if not b"WARC/".startswith(buffer[:5]) or (header_end >= 0 and length is None):
                    # Not a record: what came before is whole, the file is not clean.
                    return one_member or whole_records > 0, False
                if header_end < 0:
                    if len(buffer) > _MAX_HEADER_BYTES:
                        return one_member or whole_records > 0, False
                    break
                buffer, need = buffer[header_end + 4 :], int(length.group(1))
    except _Cut:
        return not one_member and whole_records > 0, False
    complete = need is None and not buffer
    return (complete if one_member else whole_records > 0), complete


def _member_opens_record(stream: BinaryIO, position: int) -> bool:
    """Whether a gzip member starting at ``position`` decompresses to a line starting ``WARC/1.``."""
    stream.seek(position)
    try:
        start = zlib.decompressobj(31).decompress(stream.read(_CHUNK_BYTES), len(_WARC_VERSION))
    except zlib.error:
        return False
    return start == _WARC_VERSION


def _blank_from(stream: BinaryIO, position: int) -> bool:
    stream.seek(position)
    return not stream.read(_MAX_HEADER_BYTES).strip(b"\r\n")


def _next_record_start(stream: BinaryIO, after: int, gzipped: bool) -> int | None:
    """The offset of the first record start after ``after``: a gzip member opening with ``WARC/1.`` (``gzipped``)
    or a ``WARC/1.`` at the start of a line; None if the file holds none. One pass over the rest of the file."""
    marker = _GZIP_MAGIC + b"\x08" if gzipped else b"\n" + _WARC_VERSION
    position = after + 1 - (0 if gzipped else 1)  # a plain record's line break may be the byte at ``after``
    while True:
        stream.seek(position)
        chunk = stream.read(_CHUNK_BYTES)
        if len(chunk) < len(marker):
            return None
        found = chunk.find(marker)
        while found >= 0:
            candidate = position + found + (0 if gzipped else 1)
            if not gzipped or _member_opens_record(stream, candidate):
                return candidate
            found = chunk.find(marker, found + 1)
        position += len(chunk) - len(marker) + 1


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
        gzipped = stream.read(2) == _GZIP_MAGIC
        start: int | None = 0
        first = True
        while start is not None:
            stream.seek(start)
            held: _Record | None = None
            failed = False
            try:
                for record in ArchiveIterator(stream, parse_http=True):
                    # A next record was found: the held one is whole.
                    if held is not None:
                        _count(stats, held.counts)
                        if held.page is not None:
                            yield held.page
                    held = _read_record(record, warc_uri, max_body_bytes)
            except _READ_ERRORS:
                # FastWARC cannot resynchronise after a broken record or gzip member: that is done below.
                failed = True
            whole, clean = _tail_state(stream, held.offset if held is not None else start)
            if held is not None and whole:
                _count(stats, held.counts)
                if held.page is not None:
                    yield held.page
            if clean and not failed and (held is None or whole):
                break
            if held is None and failed and clean and _blank_from(stream, start):
                break  # an empty file (or blank lines at its end) is no error; FastWARC raises on it
            # One malformed stretch, counted once: a pass that read nothing after a resync is the same stretch.
            new_stretch = first or held is not None
            stats.malformed += new_stretch
            # Resume at the next record start after the last record read (or after where this pass started).
            start = _next_record_start(stream, held.offset if held is not None else start, gzipped)
            stats.resynced += new_stretch and start is not None
            first = False
    finally:
        stream.close()
