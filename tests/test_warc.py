"""WARC reading: only HTTP 200 HTML responses come out, everything else is counted, bad files never raise."""

from __future__ import annotations

import gzip
import io
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
