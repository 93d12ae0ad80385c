"""Hostile input costs a record, never a partition (issue #16): URL and candidate budgets, nesting budgets and
linear caption/picture lookups, WARC resynchronisation after a bad record. Inputs are generated; each test is fast."""

from __future__ import annotations

import random
import time
from pathlib import Path

from mella_assets.crawl.html import extract_page, extract_warc
from mella_assets.crawl.html.extract import (
    MAX_IMAGE_URL_CHARS,
    MAX_PAGE_CANDIDATES,
    MAX_PAGE_DEPTH,
    MAX_PAGE_ELEMENTS,
    MAX_PAGE_URL_CHARS,
)
from mella_assets.crawl.warc import WarcStats, iter_html_responses
from tests.support.bad_inputs import SEED, page_html, warc_record


def _candidate_chars(page) -> int:
    return sum(len(c.image_url) + len(c.src_url or "") for c in page.images)


# -- (3) memory amplification ------------------------------------------------------------------------------------
def test_long_base_or_page_url_times_many_images_stays_bounded() -> None:
    images = b'<img src="a.jpg">' * 5000
    # A <base href> just over the budget: the page is rejected, nothing resolved.
    long_base = b'<html><head><base href="http://e.example/' + b"d/" * MAX_PAGE_URL_CHARS + b'"></head><body>'
    page = extract_page(long_base + images, "http://e.example/")
    assert (page.reject_reason, page.images) == ("url_too_long", [])
    # A page URL over the budget: the same.
    page = extract_page(b"<html><body>" + images, "http://e.example/" + "p/" * MAX_PAGE_URL_CHARS)
    assert (page.reject_reason, page.images) == ("url_too_long", [])
    # Within the budgets, thousands of images: the candidates stop at the page budget, each URL within its own.
    base = b'<html><head><base href="http://e.example/' + b"d/" * 1000 + b'"></head><body>'
    page = extract_page(base + images, "http://e.example/")
    assert len(page.images) == MAX_PAGE_CANDIDATES
    assert page.candidates_over_budget == 5000 - MAX_PAGE_CANDIDATES
    assert _candidate_chars(page) <= 2 * MAX_IMAGE_URL_CHARS * MAX_PAGE_CANDIDATES


def test_a_url_over_the_budget_costs_that_candidate_only() -> None:
    long_src = "x" * (MAX_IMAGE_URL_CHARS + 1)
    body = (
        f'<html><body><img src="{long_src}" alt="a"><img srcset="/{long_src} 900w" src="ok.jpg">'
        f'<img src="fine.jpg" alt="b"></body></html>'
    ).encode()
    page = extract_page(body, "http://e.example/")
    assert [c.image_url for c in page.images] == ["http://e.example/fine.jpg"]
    assert page.urls_too_long == 2
    assert page.reject_reason is None


def test_generated_amplification_pages_keep_size_per_candidate_bounded() -> None:
    rng = random.Random(SEED)
    for _ in range(20):
        base_len, count = rng.randrange(1, MAX_PAGE_URL_CHARS - 30), rng.randrange(1, 4000)
        body = (
            f'<html><head><base href="http://e.example/{"b" * base_len}/"></head><body>'
            + '<img src="i.jpg">' * count
            + "</body></html>"
        ).encode()
        page = extract_page(body, "http://e.example/")
        kept = len(page.images) + page.urls_too_long + page.candidates_over_budget
        assert kept == count and len(page.images) <= MAX_PAGE_CANDIDATES
        assert all(len(c.image_url) <= MAX_IMAGE_URL_CHARS for c in page.images)
        assert _candidate_chars(page) <= 2 * MAX_IMAGE_URL_CHARS * max(len(page.images), 1)


# -- (5) nesting -------------------------------------------------------------------------------------------------
def _nested(tag: str, depth: int) -> bytes:
    inner = "<img src='deep.jpg' alt='x'><figcaption>Cap</figcaption>" if tag == "figure" else "<img src='d.jpg'>"
    return f"<html><body>{f'<{tag}>' * depth}{inner}{f'</{tag}>' * depth}</body></html>".encode()


def _seconds(body: bytes) -> float:
    start = time.perf_counter()
    extract_page(body, "http://e.example/")
    return time.perf_counter() - start


def test_nesting_within_the_budget_costs_linear_time() -> None:
    for tag in ("figure", "div"):
        small, large = (_seconds(_nested(tag, depth)) for depth in (500, 4000))
        # 8x the depth: ~8x the time when linear (64x when quadratic; the parser's own share is); 4,000 nested
        # figures took 0.85 s with the quadratic caption lookup.
        assert large < max(30 * small, 0.5), (tag, small, large)
    page = extract_page(_nested("figure", 4000), "http://e.example/")
    assert [(c.image_url, c.context_text) for c in page.images] == [("http://e.example/deep.jpg", "Cap")]


def test_nested_pictures_are_linear() -> None:
    body = ("<html><body>" + "<picture><source srcset='s.webp 100w'><img src='p.jpg'>" * 1000).encode()
    page = extract_page(body, "http://e.example/")
    assert len(page.images) == 1000 and page.images[0].source_attr == "picture"
    assert _seconds(body) < 2.0


def test_pages_over_the_depth_or_element_budget_are_rejected_before_parsing() -> None:
    for depth in (MAX_PAGE_DEPTH * 2, 100_000):
        body = _nested("div", depth)
        page = extract_page(body, "http://e.example/")
        assert (page.reject_reason, page.images) == ("page_too_complex", [])
        assert _seconds(body) < 1.0
    flat = b"<html><body>" + b"<i>x</i>" * (MAX_PAGE_ELEMENTS // 2 + 1)
    assert extract_page(flat, "http://e.example/").reject_reason == "page_too_complex"


def test_rejected_pages_are_counted_by_reason_in_the_warc_stats(tmp_path: Path) -> None:
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(
        warc_record("https://e.example/deep", _nested("div", MAX_PAGE_DEPTH * 2))
        + warc_record("https://e.example/" + "u" * MAX_PAGE_URL_CHARS, page_html())
        + warc_record("https://e.example/ok", page_html())
    )
    stats = WarcStats()
    frame = extract_warc(path, stats)
    assert frame["page_url"].to_list() == ["https://e.example/ok"]
    assert (stats.pages_too_complex, stats.pages_url_too_long, stats.html_pages) == (1, 1, 3)


# -- (11) WARC resynchronisation ---------------------------------------------------------------------------------
def _bad_members() -> dict[str, bytes]:
    rng = random.Random(SEED)
    crc = bytearray(warc_record("https://e.example/bad", page_html() * 20))
    crc[len(crc) // 2 : len(crc) // 2 + 16] = rng.randbytes(16)
    return {
        "corrupt_deflate": bytes(crc),
        "cut_member": warc_record("https://e.example/cut", page_html())[:100],
        "garbage": rng.randbytes(3000),
        "huge_headers": warc_record("https://e.example/h", page_html(), extra_headers=(("X-Big", "a" * 2_000_000),)),
    }


def test_records_after_a_bad_record_are_still_read(tmp_path: Path) -> None:
    before = [warc_record(f"https://e.example/before/{i}", page_html()) for i in range(3)]
    after = [warc_record(f"https://e.example/after/{i}", page_html()) for i in range(3)]
    for name, bad in _bad_members().items():
        path = tmp_path / f"{name}.warc.gz"
        path.write_bytes(b"".join(before) + bad + b"".join(after) + bad + after[0])
        stats = WarcStats()
        urls = [response.page_url for response in iter_html_responses(path, stats)]
        expected = [f"https://e.example/{part}/{i}" for part in ("before", "after") for i in range(3)]
        assert urls == [*expected, "https://e.example/after/0"], name
        # A 2 MB HTTP head inside an intact WARC record is the record's fault only (our head parse stops at 64 KB):
        # the WARC framing holds, so reading goes on without a resync; the other members break the framing.
        resynced = 0 if name == "huge_headers" else 2
        assert (stats.malformed, stats.resynced) == (2, resynced), (name, stats)


def test_plain_warc_resynchronises_at_the_next_warc_line(tmp_path: Path) -> None:
    good = [warc_record(f"https://e.example/p/{i}", page_html(), compress=False) for i in range(3)]
    path = tmp_path / "plain.warc"
    path.write_bytes(
        good[0] + b"WARC/1.0\r\nContent-Length: nope\r\n\r\njunk\r\n\r\n" + good[1] + b"\x00junk\r\n" + good[2]
    )
    stats = WarcStats()
    urls = [response.page_url for response in iter_html_responses(path, stats)]
    assert urls == [f"https://e.example/p/{i}" for i in range(3)]
    assert stats.malformed == 2
