"""Read HTML responses out of WARC files (gzip or plain), counting everything that is skipped.

Records are read with FastWARC (~4x warcio's records/s, ``benchmarks/bench_extraction.py``). Bad input never
raises: a truncated or corrupt gzip member, a record with oversized headers or a wrong Content-Length is counted in
:attr:`WarcStats.malformed`, and reading resumes at the next record start after it (the next gzip member that opens
with ``WARC/1.``, or in a plain file the next line starting ``WARC/1.``; :attr:`WarcStats.resynced` counts those
resumptions), so one bad record costs that record, not the rest of a 1 GB file.
FastWARC yields a record cut by the end of the file as if it were whole,
so a record counts only once the next one has been found, and the last one only once :func:`_tail_state` has
checked that the file holds all of it. A Content-Length slightly too large makes FastWARC read on into the next
record; where that ends exactly on a later record's start, FastWARC carries on silently, so each record is checked
for a record start inside it (:func:`_swallowed_start`) and reading resumes there.

The HTTP status line and headers are parsed here (:func:`parse_http_head`), not by FastWARC: it finds no headers
in a block whose lines end with a bare LF (and loses the body when only some do), which real crawlers write.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from mella_assets.lib.watchdog import check_deadline

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
# An HTTP header block longer than this is not a web page's (servers refuse ~8-64 KB): the record is malformed.
MAX_HTTP_HEADER_BYTES = 1 << 16
# Most bytes decompressed to check where a record's gzip member ends (a record is ~1 MB at most in Common Crawl).
_MAX_CHECKED_BYTES = 1 << 26
_HEAD_READ_BYTES = 8192  # read first: holds a real response's headers, so a skipped image costs no more


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


# -- the HTTP head of a response record ---------------------------------------------------------------------
@dataclass(frozen=True)
class HttpHead:
    """The status and headers of an HTTP response block, and where its body starts."""

    status: int | None  # None: the first line is not an ``HTTP/x 123`` status line
    headers: tuple[tuple[str, str], ...]
    body_start: int

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


def _head_end(block: bytes) -> tuple[int, int] | None:
    """(end of the last header line, start of the body) at the first blank line, whether lines end with CRLF or
    a bare LF (each line may differ); None when ``block`` holds no blank line. One step per line."""
    line_end = block.find(b"\n")
    while line_end >= 0:
        if block.startswith(b"\n", line_end + 1):
            return line_end, line_end + 2
        if block.startswith(b"\r\n", line_end + 1):
            return line_end, line_end + 3
        line_end = block.find(b"\n", line_end + 1)
    return None


def parse_http_head(block: bytes) -> HttpHead | None:
    """The head of an HTTP response block (the start of a WARC ``response`` record's payload), or None when no
    blank line ends the headers within ``block``. Lines may end with CRLF or a bare LF; header bytes are read as
    Latin-1 (as ``http.client``); a folded line (leading space or tab) continues the previous value; a line
    without a colon is ignored. Linear in ``len(block)``."""
    end = _head_end(block)
    if end is None:
        return None
    lines = block[: end[0]].decode("latin-1").split("\n")
    fields = lines[0].split(None, 2)
    status = None
    if len(fields) >= 2 and fields[0].startswith("HTTP/") and len(fields[1]) == 3 and fields[1].isascii():
        status = int(fields[1]) if fields[1].isdigit() else None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.removesuffix("\r")
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers.append((name.strip(), value.strip()))
    return HttpHead(status, tuple(headers), end[1])


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


def _decoded_body(headers: HttpHead, body: bytes, max_bytes: int) -> bytes:
    """``body`` without its transfer and content encodings; left as it is where they do not apply (as warcio)."""
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
    # Header bytes (as written "Name: value" with CRLFs, which nearly every writer does) + declared block length:
    # lets :func:`_whole` prove a record whole with a few bytes read.
    size: int = -1


def _record_size(record: WarcRecord) -> int:
    head = record.headers
    lines = len(head.status_line_bytes) + 2 + sum(len(k) + len(v) + 4 for k, v in head.items_bytes())
    return lines + 2 + record.content_length


def _read_record(record: WarcRecord, warc_uri: str, max_body_bytes: int) -> _Record:
    result = _read(record, warc_uri, max_body_bytes)
    result.size = _record_size(record)
    return result


def _read(record: WarcRecord, warc_uri: str, max_body_bytes: int) -> _Record:
    offset = record.stream_pos
    if record.record_type != WarcRecordType.response:
        return _Record(("records",), offset)
    target = record.headers.get("WARC-Target-URI") or ""
    if "://" not in target and not target.startswith(("dns:", "whois:")):
        return _Record(("malformed",), offset)
    if not record.is_http:
        # A response without HTTP headers (dns:, whois:) is not a web page.
        return _Record(("records", "responses", "skipped_non_html"), offset)
    start = record.reader.read(_HEAD_READ_BYTES)
    if len(start) == _HEAD_READ_BYTES and _head_end(start) is None:
        start += record.reader.read(MAX_HTTP_HEADER_BYTES - len(start))
    headers = parse_http_head(start)
    if headers is None:
        # No end to the headers within the cap (or the block): nothing in it can be told apart as a body.
        return _Record(("records", "responses", "malformed"), offset)
    status = headers.status
    if status != 200:
        return _Record(("records", "responses", "skipped_status"), offset)
    content_type = headers.get("Content-Type") or ""
    if _media_type(content_type) not in HTML_CONTENT_TYPES:
        return _Record(("records", "responses", "skipped_non_html"), offset)
    body = start[headers.body_start : headers.body_start + max_body_bytes]
    if len(body) < max_body_bytes:
        body += record.reader.read(max_body_bytes - len(body))
    page = HtmlResponse(
        warc_uri=warc_uri,
        record_offset=offset,
        page_url=target,
        http_status=status,
        content_type=content_type,
        fetch_date=record.headers.get("WARC-Date") or "",
        body=_decoded_body(headers, body, max_body_bytes),
        # Repeated headers are joined: each may carry its own directives.
        x_robots_tag=", ".join(headers.get_all("X-Robots-Tag")),
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


def _next_record_start(stream: BinaryIO, after: int, gzipped: bool, before: int | None = None) -> int | None:
    """The offset of the first record start after ``after`` (and before ``before``, if given): a gzip member
    opening with ``WARC/1.`` (``gzipped``) or a ``WARC/1.`` at the start of a line; None if there is none. One
    pass over that stretch of the file."""
    marker = _GZIP_MAGIC + b"\x08" if gzipped else b"\n" + _WARC_VERSION
    position = after + 1 - (0 if gzipped else 1)  # a plain record's line break may be the byte at ``after``
    while before is None or position < before:
        stream.seek(position)
        size = _CHUNK_BYTES if before is None else min(_CHUNK_BYTES, before - position + len(marker))
        chunk = stream.read(size)
        if len(chunk) < len(marker):
            return None
        found = chunk.find(marker)
        while found >= 0:
            candidate = position + found + (0 if gzipped else 1)
            if before is not None and candidate >= before:
                return None
            if not gzipped or _member_opens_record(stream, candidate):
                return candidate
            found = chunk.find(marker, found + 1)
        position += len(chunk) - len(marker) + 1
    return None


def _member_end(stream: BinaryIO, position: int, limit: int) -> int | None:
    """Where the gzip member starting at ``position`` ends (decompressing at most ``limit`` bytes), or None."""
    stream.seek(position)
    member, produced = zlib.decompressobj(31), 0
    try:
        for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            while chunk and not member.eof:
                produced += len(member.decompress(chunk, _CHUNK_BYTES))
                chunk = member.unconsumed_tail
                if produced > limit:
                    return None
            if member.eof:
                return stream.tell() - len(member.unused_data) - len(chunk)
    except zlib.error:
        return None
    return None


def _plain_records_end_at(stream: BinaryIO, position: int, end: int) -> bool:
    """Whether the plain records from ``position`` on, each with its declared length and blank lines after it,
    end exactly at ``end``."""
    while position < end:
        stream.seek(position)
        head = stream.read(_MAX_HEADER_BYTES)
        header_end = head.find(b"\r\n\r\n")
        length = _CONTENT_LENGTH.search(head, 0, header_end + 2) if header_end >= 0 else None
        if not head.startswith(_WARC_VERSION) or length is None:
            return False
        position += header_end + 4 + int(length.group(1))
        stream.seek(position)
        after = stream.read(4)
        position += len(after) - len(after.lstrip(b"\r\n"))
    return position == end


def _whole(stream: BinaryIO, held: _Record, next_offset: int, gzipped: bool) -> bool:
    """A quick proof that ``held`` ends where the next record starts (False: not proven, check slowly).
    Gzipped: the member ending at ``next_offset`` holds exactly this record (ISIZE in its trailer; a member that a
    too-long record swallowed is always smaller). Plain: its declared end is followed by a blank line."""
    if held.size < 0:
        return False
    if gzipped:
        if next_offset - held.offset < 28:
            return False
        stream.seek(next_offset - 4)
        return int.from_bytes(stream.read(4), "little") == (held.size + 4) & 0xFFFFFFFF
    stream.seek(held.offset + held.size)
    gap = stream.read(max(0, min(next_offset - held.offset - held.size, 64)))
    return len(gap) >= 4 and not gap.strip(b"\r\n")


def _swallowed_start(stream: BinaryIO, offset: int, next_offset: int, gzipped: bool) -> int | None:
    """The start of a record that the record at ``offset`` swallowed (FastWARC found the next one at
    ``next_offset``), or None. A Content-Length too large runs on over a later record's start; where it ends
    exactly at a record's end, FastWARC goes on without a word and the records in between are lost.

    A candidate counts only where the file's own structure puts a record start there, so bytes that merely look
    like a record inside a payload (a stored WARC file, a stored deflate block) are never read as one: gzipped,
    the member at ``offset`` (and any after it) must end exactly at the candidate; plain, the record at ``offset``
    must lack its blank-line terminator and the records from the candidate on must end exactly at
    ``next_offset``. (Plain, a length too large by exactly a swallowed record and its blank line looks like a
    whole record that holds a WARC file, so that one shape is left as it is.)"""
    if not gzipped:
        stream.seek(offset)
        head = stream.read(4096)  # a record's WARC header is ~0.5 KB
        if b"\r\n\r\n" not in head:
            head += stream.read(_MAX_HEADER_BYTES - len(head))
        header_end = head.find(b"\r\n\r\n")
        length = _CONTENT_LENGTH.search(head, 0, header_end + 2) if header_end >= 0 else None
        if length is None:
            return None
        declared_end = offset + header_end + 4 + int(length.group(1))
        stream.seek(declared_end)
        gap = stream.read(max(0, min(next_offset - declared_end, 64)))
        if len(gap) >= 4 and not gap.strip(b"\r\n"):
            return None  # ends with its terminator: whole
    position = offset
    while True:
        candidate = _next_record_start(stream, position, gzipped, before=next_offset)
        if candidate is None:
            return None
        if gzipped:
            end = offset
            while end is not None and end < candidate:
                end = _member_end(stream, end, _MAX_CHECKED_BYTES)
            if end == candidate:
                return candidate
        elif _plain_records_end_at(stream, candidate, next_offset):
            return candidate
        position = candidate


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
    probe = None
    try:
        probe = open(path, "rb")  # noqa: SIM115 - a second reader for checks: FastWARC buffers ``stream``
        gzipped = stream.read(2) == _GZIP_MAGIC
        start: int | None = 0
        first = True
        while start is not None:
            stream.seek(start)
            held: _Record | None = None
            failed = False
            swallowed: int | None = None
            try:
                for record in ArchiveIterator(stream, parse_http=False):
                    check_deadline()  # a large file stops at the stage deadline (StageTimeout), not after it
                    # A next record was found: the held one is whole.
                    if held is not None:
                        if not _whole(probe, held, record.stream_pos, gzipped):
                            swallowed = _swallowed_start(probe, held.offset, record.stream_pos, gzipped)
                        _count(stats, held.counts)
                        if held.page is not None:
                            yield held.page
                        if swallowed is not None:
                            break
                    held = _read_record(record, warc_uri, max_body_bytes)
            except _READ_ERRORS:
                # FastWARC cannot resynchronise after a broken record or gzip member: that is done below.
                failed = True
            if swallowed is None and held is not None and not failed:
                # The last record may have swallowed the file's last records.
                size = os.fstat(probe.fileno()).st_size
                if not _whole(probe, held, size, gzipped):
                    swallowed = _swallowed_start(probe, held.offset, size, gzipped)
                if swallowed is not None:
                    _count(stats, held.counts)
                    if held.page is not None:
                        yield held.page
            if swallowed is not None:
                # The held record is counted (its page is whole, with the next record's start after it).
                stats.malformed += 1
                stats.resynced += 1
                start, first = swallowed, False
                continue
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
        if probe is not None:
            probe.close()
