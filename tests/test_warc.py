"""WARC reading: only HTTP 200 HTML responses come out, everything else is counted, bad files never raise."""

from __future__ import annotations

import gzip
import io
import itertools
import random
import zlib
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mella_assets.crawl.warc import HtmlResponse, WarcStats, iter_html_responses

DATE = "2024-05-01T10:00:00Z"
PAGE_A = b"<html lang='cs'><body><img src='a.jpg' alt='Hrad'></body></html>"
PAGE_B = "<html><body><p>Ahoj světe</p></body></html>".encode()


def _response(writer: WARCWriter, url: str, status: str, content_type: str, body: bytes):
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        http_headers=headers,
        warc_headers_dict={"WARC-Date": DATE},
    )


def write_sample_warc(path: Path, gzip: bool = True) -> list[int]:
    """Request, HTML page, JPEG, 404 page, HTML page; returns the byte offset of every record."""
    offsets = []
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=gzip)
        request = writer.create_warc_record(
            "https://example.cz/a",
            "request",
            payload=io.BytesIO(b"GET /a HTTP/1.1\r\nHost: example.cz\r\n\r\n"),
            warc_headers_dict={"WARC-Date": DATE},
        )
        records = [
            request,
            _response(writer, "https://example.cz/a", "200 OK", "text/html; charset=utf-8", PAGE_A),
            _response(writer, "https://example.cz/a.jpg", "200 OK", "image/jpeg", b"\xff\xd8\xff\xe0fake"),
            _response(writer, "https://example.cz/missing", "404 Not Found", "text/html", b"<p>nope</p>"),
            _response(writer, "https://example.cz/b", "200 OK", "application/xhtml+xml", PAGE_B),
        ]
        for record in records:
            offsets.append(stream.tell())
            writer.write_record(record)
    return offsets


def test_only_http_200_html_responses_are_yielded_with_their_offsets(tmp_path: Path) -> None:
    path = tmp_path / "sample.warc.gz"
    offsets = write_sample_warc(path)
    stats = WarcStats()

    pages = list(iter_html_responses(path, stats))

    uri = path.resolve().as_uri()
    assert pages == [
        HtmlResponse(uri, offsets[1], "https://example.cz/a", 200, "text/html; charset=utf-8", DATE, PAGE_A),
        HtmlResponse(uri, offsets[4], "https://example.cz/b", 200, "application/xhtml+xml", DATE, PAGE_B),
    ]
    assert stats == WarcStats(records=5, responses=4, html_pages=2, skipped_non_html=1, skipped_status=1, malformed=0)


def test_uncompressed_warc_reads_the_same_pages(tmp_path: Path) -> None:
    path = tmp_path / "sample.warc"
    offsets = write_sample_warc(path, gzip=False)

    pages = list(iter_html_responses(str(path)))

    assert [(page.record_offset, page.page_url) for page in pages] == [
        (offsets[1], "https://example.cz/a"),
        (offsets[4], "https://example.cz/b"),
    ]


def test_truncated_gzip_warc_stops_without_raising_and_counts_malformed(tmp_path: Path) -> None:
    whole = tmp_path / "whole.warc.gz"
    offsets = write_sample_warc(whole)
    data = whole.read_bytes()
    # Cut inside the 404 record: the first page is complete, the rest is lost.
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: (offsets[3] + offsets[4]) // 2])
    stats = WarcStats()

    pages = list(iter_html_responses(cut, stats))

    assert [page.page_url for page in pages] == ["https://example.cz/a"]
    assert stats == WarcStats(records=3, responses=2, html_pages=1, skipped_non_html=1, skipped_status=0, malformed=1)


def test_warc_cut_at_every_byte_never_raises_and_never_yields_a_partial_page(tmp_path: Path) -> None:
    whole = tmp_path / "whole.warc.gz"
    offsets = write_sample_warc(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    missed = 0
    for size in range(1, len(data), 7):
        cut.write_bytes(data[:size])
        stats = WarcStats()
        pages = list(iter_html_responses(cut, stats))
        assert all(page.body in (PAGE_A, PAGE_B) for page in pages)
        missed += size not in offsets and stats.malformed == 0
    # Every cut between record boundaries is noticed, even one inside a gzip member's trailer.
    assert missed == 0


def test_garbage_file_counts_one_malformed(tmp_path: Path) -> None:
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(b"this is not a warc file at all\r\n\r\n")
    stats = WarcStats()

    assert list(iter_html_responses(path, stats)) == []
    assert stats == WarcStats(malformed=1)


def test_empty_file_is_no_error_and_trailing_junk_is_counted_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.warc.gz"
    write_sample_warc(junk)
    junk.write_bytes(junk.read_bytes() + b"not a record")
    empty_stats, junk_stats = WarcStats(), WarcStats()

    assert list(iter_html_responses(empty, empty_stats)) == []
    assert [page.page_url for page in iter_html_responses(junk, junk_stats)] == [
        "https://example.cz/a",
        "https://example.cz/b",
    ]
    assert empty_stats == WarcStats()
    assert junk_stats == WarcStats(
        records=5, responses=4, html_pages=2, skipped_non_html=1, skipped_status=1, malformed=1
    )


def test_warc_gzipped_as_one_member_reads_every_page(tmp_path: Path) -> None:
    plain = tmp_path / "sample.warc"
    write_sample_warc(plain, gzip=False)
    whole = tmp_path / "whole.warc.gz"
    whole.write_bytes(gzip.compress(plain.read_bytes()))
    stats = WarcStats()

    pages = list(iter_html_responses(whole, stats))

    assert [(page.page_url, page.body) for page in pages] == [
        ("https://example.cz/a", PAGE_A),
        ("https://example.cz/b", PAGE_B),
    ]
    assert stats == WarcStats(records=5, responses=4, html_pages=2, skipped_non_html=1, skipped_status=1, malformed=0)


def test_transfer_and_content_encodings_are_undone_and_bad_ones_left_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "encoded.warc.gz"
    chunked = b"7\r\n<p>Ahoj\r\nA\r\n svete</p>\r\n0\r\n\r\n"
    bodies = [
        ([("Content-Encoding", "gzip")], gzip.compress(PAGE_A)),
        ([("Content-Encoding", "deflate")], zlib.compress(PAGE_B)),
        ([("Transfer-Encoding", "chunked")], chunked),
        ([("Content-Encoding", "gzip")], b"<p>not gzip after all</p>"),
        ([("Transfer-Encoding", "chunked")], b"<p>not chunked</p>"),
        ([("X-Robots-Tag", "noai"), ("x-robots-tag", "otherbot: noimageai")], b"<p>opted out</p>"),
    ]
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        for number, (extra, body) in enumerate(bodies):
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), *extra], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    f"https://example.cz/{number}", "response", payload=io.BytesIO(body), http_headers=headers
                )
            )

    pages = list(iter_html_responses(path))

    assert [page.body for page in pages] == [
        PAGE_A,
        PAGE_B,
        b"<p>Ahoj svete</p>",
        b"<p>not gzip after all</p>",
        b"<p>not chunked</p>",
        b"<p>opted out</p>",
    ]
    assert pages[-1].x_robots_tag == "noai, otherbot: noimageai"


# -- hand-made records: HTTP heads with any line ends, Content-Lengths that do not match ------------------------
def _raw_record(uri: str, block: bytes, kind: str = "response", length_error: int = 0) -> bytes:
    content_type = {"response": "application/http; msgtype=response", "request": "application/http; msgtype=request"}
    head = (
        f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{abs(hash(uri))}>\r\n"
        f"WARC-Target-URI: {uri}\r\nWARC-Date: {DATE}\r\nContent-Type: {content_type.get(kind, 'text/plain')}\r\n"
        f"Content-Length: {len(block) + length_error}\r\n\r\n"
    )
    return head.encode() + block + b"\r\n\r\n"


def _write(path: Path, records: list[bytes], gzipped: bool) -> Path:
    path.write_bytes(b"".join(gzip.compress(record) for record in records) if gzipped else b"".join(records))
    return path


def _http(lines: list[bytes], ends: list[bytes], blank: bytes, body: bytes) -> bytes:
    return b"".join(line + end for line, end in zip(lines, ends, strict=True)) + blank + body


HEAD_LINES = [b"HTTP/1.1 200 OK", b"Content-Type: text/html; charset=utf-8", b"X-Robots-Tag: noai", b"Server: x"]


def _head_variants() -> list[tuple[str, bytes, bool]]:
    """(name, HTTP block, whether it is a page) for generated line-ending and size variants."""
    rng = random.Random(16)
    n = len(HEAD_LINES)
    pad = [*HEAD_LINES, b"X-Pad: " + b"a" * 30_000]
    over = [*HEAD_LINES, b"X-Pad: " + b"a" * 70_000]
    variants = [
        ("crlf", _http(HEAD_LINES, [b"\r\n"] * n, b"\r\n", PAGE_A), True),
        ("bare_lf", _http(HEAD_LINES, [b"\n"] * n, b"\n", PAGE_A), True),
        ("lf_lines_crlf_blank", _http(HEAD_LINES, [b"\n"] * n, b"\r\n", PAGE_A), True),
        ("crlf_lines_lf_blank", _http(HEAD_LINES, [b"\r\n"] * n, b"\n", PAGE_A), True),
        ("folded_header", _http([*HEAD_LINES[:2], b" ; q=1", *HEAD_LINES[2:]], [b"\n"] * (n + 1), b"\n", PAGE_A), True),
        ("huge_header_ended", _http(pad, [b"\n"] * (n + 1), b"\n", PAGE_A), True),
        ("huge_header_over_cap", _http(over, [b"\n"] * (n + 1), b"\n", PAGE_A), False),
        ("no_header_end", _http(HEAD_LINES, [b"\n"] * n, b"", b""), False),
        ("no_header_end_over_cap", b"HTTP/1.1 200 OK\n" + b"X-Pad: a\n" * 20_000, False),
        ("empty_block", b"", False),
    ]  # fmt: skip
    for number in range(40):
        ends = [rng.choice([b"\r\n", b"\n"]) for _ in range(n)]
        variants.append((f"mixed_{number}", _http(HEAD_LINES, ends, rng.choice([b"\r\n", b"\n"]), PAGE_A), True))
    return variants


def test_http_heads_with_bare_lf_or_mixed_line_ends_are_read_like_crlf_ones(tmp_path: Path) -> None:
    for gzipped in (False, True):
        for name, block, is_page in _head_variants():
            records = [
                _raw_record("https://example.cz/variant", block),
                _raw_record("https://example.cz/after", _http(HEAD_LINES[:2], [b"\r\n"] * 2, b"\r\n", PAGE_B)),
            ]
            stats = WarcStats()

            pages = list(iter_html_responses(_write(tmp_path / f"{name}.warc", records, gzipped), stats))

            expected = [("https://example.cz/variant", PAGE_A, "noai")] if is_page else []
            expected.append(("https://example.cz/after", PAGE_B, ""))
            assert [(p.page_url, p.body, p.x_robots_tag) for p in pages] == expected, (name, gzipped)
            assert pages[0].content_type == "text/html; charset=utf-8" + (" ; q=1" if name == "folded_header" else "")
            assert (stats.html_pages, stats.malformed) == (2 if is_page else 1, 0 if is_page else 1), name


def _page_block(number: int, rng: random.Random) -> bytes:
    body = b"<html><body><img src='%d.jpg' alt='Hrad'>%s</body></html>" % (number, b"x" * rng.randrange(400))
    return _http(HEAD_LINES[:2], [b"\r\n"] * 2, b"\r\n", body)


def _small_record(number: int, kind: str) -> bytes:
    """A metadata or resource record of ~90 bytes: short enough that k <= 200 swallows one or two whole. (Its
    block does not end with a blank line: that makes a plain record swallowed up to its end the ambiguous shape.)"""
    block = b"fetchTimeMs: %d" % number if kind == "metadata" else b"note %d" % number
    head = f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:x:{number}>\r\nContent-Length: {len(block)}\r\n\r\n"
    return head.encode() + block + b"\r\n\r\n"


def test_a_content_length_too_large_by_k_loses_no_following_record_and_counts_the_damaged_one(tmp_path: Path):
    rng = random.Random(2)
    outcomes = {"counted": 0, "whole_records_swallowed": 0, "terminator_only": 0, "plain_ambiguous": 0}
    for gzipped in (False, True):
        for k in range(1, 201):
            # page 0, page 1 with a Content-Length k too large, small records, then a random mix
            kinds = ["response", "response", "resource", "metadata", "resource"]
            kinds += [rng.choice(["response", "resource", "metadata"]) for _ in range(4)]
            records, pages = [], []
            for number, kind in enumerate(kinds):
                if kind == "response":
                    error = k if number == 1 else 0
                    records.append(_raw_record(f"https://example.cz/{number}", _page_block(number, rng), kind, error))
                    pages.append(number)
                else:
                    records.append(_small_record(number, kind))
            stats = WarcStats()
            path = _write(tmp_path / "k.warc", records, gzipped)

            got = [int(p.page_url.rsplit("/", 1)[1]) for p in iter_html_responses(path, stats)]

            # Where the too-long record ends exactly at the end of the records after it, FastWARC reads on silently.
            ends = list(itertools.accumulate(len(record) for record in records[2:]))
            if not gzipped and k in ends:
                # The one plain shape that cannot be told from a record holding a WARC file: those are lost.
                lost = ends.index(k) + 1
                assert (stats.records, stats.malformed) == (len(records) - lost, 0), k
                assert got == [n for n in pages if not 2 <= n < 2 + lost], k
                outcomes["plain_ambiguous"] += 1
                continue
            # Every record once (the damaged one too: whole, with bytes after it), the damage counted once.
            assert (got, stats.records) == (pages, len(records)), (gzipped, k)
            assert stats.malformed == (k > 4), (gzipped, k)  # up to 4 bytes are its own blank line: no damage
            swallowed_whole = any(0 <= k - 4 - end < 4 for end in ends) or k in ends
            outcomes["whole_records_swallowed" if swallowed_whole else "counted" if k > 4 else "terminator_only"] += 1
    assert outcomes["whole_records_swallowed"] >= 16 and outcomes["plain_ambiguous"] <= 4, outcomes


def test_a_page_swallowed_whole_by_a_too_long_record_is_read(tmp_path: Path) -> None:
    rng = random.Random(3)
    for gzipped in (False, True):
        for last in (False, True):
            blocks = [_page_block(number, rng) for number in range(4)]
            swallowed = len(_raw_record("https://example.cz/2", blocks[2]))
            records = [
                _raw_record(f"https://example.cz/{n}", block, length_error=swallowed + 2 if n == 1 else 0)
                for n, block in enumerate(blocks[: 3 if last else 4])
            ]
            stats = WarcStats()

            got = [p.page_url[-1] for p in iter_html_responses(_write(tmp_path / "s.warc", records, gzipped), stats)]

            assert got == ["0", "1", "2"] + ([] if last else ["3"]), (gzipped, last)
            assert (stats.malformed, stats.resynced) == (1, 1)


def test_a_warc_file_stored_in_a_payload_is_never_read_as_records(tmp_path: Path) -> None:
    fake = _raw_record("https://victim.example/", _page_block(9, random.Random(0)))
    noise = random.Random(4).randbytes(3000)  # incompressible: deflate stores it, the fake member stays raw bytes
    for gzipped in (False, True):
        for payload in (fake, fake.removesuffix(b"\r\n\r\n"), gzip.compress(fake), noise + gzip.compress(fake)):
            block = _http([HEAD_LINES[0], b"Content-Type: application/warc"], [b"\r\n"] * 2, b"\r\n", payload)
            records = [
                _raw_record("https://example.cz/0", _page_block(0, random.Random(1))),
                _raw_record("https://example.cz/file.warc", block),
                _raw_record("https://example.cz/2", _page_block(2, random.Random(2))),
            ]
            stats = WarcStats()

            got = [p.page_url for p in iter_html_responses(_write(tmp_path / "f.warc", records, gzipped), stats)]

            assert got == ["https://example.cz/0", "https://example.cz/2"]
            assert (stats.records, stats.malformed) == (3, 0)
