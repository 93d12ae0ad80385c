"""HTML decoding and image candidate extraction for raw_crawl."""

from __future__ import annotations

import polars as pl

from mella_assets.lib.html import (
    RAW_CRAWL_SCHEMA,
    ImageCandidate,
    extract_page,
    pages_to_frame,
    parse_srcset,
)
from mella_assets.lib.warc import HtmlResponse

PAGE_URL = "https://WWW.Example.cz:8443/clanky/hrad.html?x=1#top"
PAGE = """<!doctype html>
<html lang="CS">
<head>
  <meta charset="utf-8">
  <meta name="robots" content="index, NoAI">
  <meta property="og:locale" content="cs_CZ">
  <title>  Pražský
     hrad </title>
  <base href="https://cdn.example.cz/media/">
</head>
<body>
  <img src="hrad.jpg#frag" alt="Pražský hrad" title="Hrad" width="640" height="480px">
  <img srcset="small.jpg 320w, large.jpg 1280w, medium.jpg 640w" src="fallback.jpg" alt="">
  <img src="placeholder.gif" data-src="/lazy/most.jpg" alt="Karlův most" width="100%">
  <picture>
    <source srcset="pic-800.webp 800w, pic-1600.webp 1600w" type="image/webp">
    <source srcset="pic-1200.jpg 1200w">
    <img src="pic.jpg" alt="Vltava">
  </picture>
  <figure>
    <div><img src="../fig.png"></div>
    <figcaption> Katedrála   <b>sv. Víta</b> v noci </figcaption>
  </figure>
  <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="pixel">
  <img src="javascript:alert(1)" alt="x">
  <img src="//static.example.org/logo.svg" alt>
  <img srcset="a.jpg, b.jpg 2x, c.jpg 1.5x">
</body>
</html>
"""

EXPECTED_IMAGES = [
    ImageCandidate(
        "https://cdn.example.cz/media/hrad.jpg", "Pražský hrad", "Hrad", 640, 480, "src", None,
        "https://cdn.example.cz/media/hrad.jpg",
    ),
    ImageCandidate(
        "https://cdn.example.cz/media/large.jpg", "", None, None, None, "srcset", None,
        "https://cdn.example.cz/media/fallback.jpg",
    ),
    ImageCandidate(
        "https://cdn.example.cz/lazy/most.jpg", "Karlův most", None, None, None, "data-src", None,
        "https://cdn.example.cz/media/placeholder.gif",
    ),
    ImageCandidate(
        "https://cdn.example.cz/media/pic-1600.webp", "Vltava", None, None, None, "picture", None,
        "https://cdn.example.cz/media/pic.jpg",
    ),
    ImageCandidate(
        "https://cdn.example.cz/fig.png", None, None, None, None, "src", "Katedrála sv. Víta v noci",
        "https://cdn.example.cz/fig.png",
    ),
    ImageCandidate(
        "https://static.example.org/logo.svg", "", None, None, None, "src", None, "https://static.example.org/logo.svg"
    ),
    ImageCandidate("https://cdn.example.cz/media/b.jpg", None, None, None, None, "srcset", None, None),
]  # fmt: skip


def test_hand_written_page_gives_exact_image_candidates() -> None:
    page = extract_page(PAGE.encode("utf-8"), PAGE_URL)

    assert page.images == EXPECTED_IMAGES
    assert page.skipped_urls == 2  # the data: URI and the javascript: URL


def test_page_fields_come_from_the_document() -> None:
    page = extract_page(PAGE.encode("utf-8"), PAGE_URL, "text/html")

    assert (page.domain, page.html_lang, page.og_locale, page.title) == (
        "www.example.cz",
        "cs",
        "cs_CZ",
        "Pražský hrad",
    )
    assert (page.charset, page.charset_source) == ("utf-8", "meta")
    assert page.opt_out is True


def test_page_without_opt_out_meta_is_not_opted_out() -> None:
    page = extract_page(b'<html lang="sr_Latn"><meta name="robots" content="noindex"></html>', "http://a.rs/")

    assert (page.opt_out, page.html_lang, page.images) == (False, "sr-latn", [])


def test_windows_1250_page_with_only_meta_charset_decodes_czech_alt() -> None:
    alt = "Žluťoučký kůň úpěl ďábelské ódy"
    body = f'<html><head><meta charset="windows-1250"></head><body><img src="/k.jpg" alt="{alt}"></body></html>'

    page = extract_page(body.encode("cp1250"), "https://example.cz/")

    assert [image.alt_raw for image in page.images] == [alt]
    assert (page.charset, page.charset_source) == ("cp1250", "meta")


def test_http_header_charset_wins_over_meta() -> None:
    body = '<meta http-equiv="Content-Type" content="text/html; charset=utf-8"><img src=a alt="Ёлка">'

    page = extract_page(body.encode("koi8-r"), "https://example.ru/", "text/html; charset=KOI8-R")

    assert [image.alt_raw for image in page.images] == ["Ёлка"]
    assert (page.charset, page.charset_source) == ("koi8-r", "http_header")


def test_http_equiv_meta_charset_is_read() -> None:
    body = '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-2"><img src=a alt="Dobrý den">'

    page = extract_page(body.encode("iso-8859-2"), "https://example.cz/")

    assert [image.alt_raw for image in page.images] == ["Dobrý den"]
    assert page.charset == "iso8859-2"


def test_utf8_bom_is_honoured_and_stripped() -> None:
    page = extract_page(b"\xef\xbb\xbf<title>\xc4\x8cesko</title>", "https://example.cz/")

    assert (page.title, page.charset, page.charset_source) == ("Česko", "utf-8", "bom")


def test_undeclared_valid_utf8_is_detected_as_utf8() -> None:
    valid = extract_page("<title>Привет</title>".encode(), "https://example.ru/")
    assert (valid.title, valid.charset_source) == ("Привет", "detected")


def test_srcset_parser_reads_widths_densities_and_defaults() -> None:
    assert parse_srcset("a.jpg 100w, b.jpg 2x,c.jpg, d,e.jpg 1.5x") == [
        ("a.jpg", 100.0, "w"),
        ("b.jpg", 2.0, "x"),
        ("c.jpg", 1.0, "x"),
        ("d,e.jpg", 1.5, "x"),
    ]


def _response(url: str, offset: int) -> HtmlResponse:
    return HtmlResponse("file:///c.warc.gz", offset, url, 200, "text/html", "2024-05-01T10:00:00Z", b"")


def test_pages_to_frame_has_the_raw_crawl_schema_and_one_row_per_page() -> None:
    page = extract_page(PAGE.encode("utf-8"), PAGE_URL)

    frame = pages_to_frame([(_response(PAGE_URL, 310), page)])

    assert frame.schema == RAW_CRAWL_SCHEMA
    row = frame.row(0, named=True)
    assert {k: v for k, v in row.items() if k != "images"} == {
        "warc_uri": "file:///c.warc.gz",
        "record_offset": 310,
        "page_url": PAGE_URL,
        "domain": "www.example.cz",
        "http_status": 200,
        "charset": "utf-8",
        "html_lang": "cs",
        "og_locale": "cs_CZ",
        "title": "Pražský hrad",
        "fetch_date": "2024-05-01T10:00:00Z",
        "opt_out": True,
        "opt_out_source": "meta",
        "charset_source": "meta",
    }
    assert [image["image_url"] for image in row["images"]] == [c.image_url for c in EXPECTED_IMAGES]
    assert row["images"][4]["context_text"] == "Katedrála sv. Víta v noci"


def test_pages_to_frame_of_nothing_keeps_the_schema() -> None:
    frame = pages_to_frame([])

    assert frame.schema == RAW_CRAWL_SCHEMA
    assert frame.height == 0
    assert frame.columns == list(RAW_CRAWL_SCHEMA.names())
    assert isinstance(frame, pl.DataFrame)


def _tuples(page) -> list[tuple]:
    return [(c.image_url, c.alt_raw, c.source_attr) for c in page.images]


def _legacy_page(alt: str, charset: str, codec: str, meta: bool) -> bytes:
    head = f'<meta charset="{charset}">' if meta else ""
    return f'<html><head>{head}</head><body><img src="/a.jpg" alt="{alt}"></body></html>'.encode(codec)


def test_windows_1251_page_with_meta_charset_decodes_russian_and_serbian_alts() -> None:
    for alt in ("Красная площадь зимой", "Храм Светог Саве у Београду"):
        page = extract_page(_legacy_page(alt, "windows-1251", "cp1251", meta=True), "http://r.example/p")
        assert (_tuples(page), page.charset, page.charset_source) == (
            [("http://r.example/a.jpg", alt, "src")],
            "cp1251",
            "meta",
        )


def test_tis_620_thai_page_declared_only_in_the_http_header_decodes() -> None:
    alt = "วัดพระแก้วยามเย็น"
    body = _legacy_page(alt, "", "tis-620", meta=False)
    page = extract_page(body, "http://t.example/p", "text/html; charset=TIS-620")
    assert (_tuples(page), page.charset, page.charset_source) == (
        [("http://t.example/a.jpg", alt, "src")],
        "cp874",  # WHATWG: tis-620 is decoded as its superset windows-874
        "http_header",
    )


def test_euc_kr_page_is_decoded_from_meta_and_cp874_label_reads_thai() -> None:
    alt = "경복궁의 가을 풍경"
    page = extract_page(_legacy_page(alt, "euc-kr", "euc_kr", meta=True), "http://k.example/p")
    assert (_tuples(page), page.charset) == ([("http://k.example/a.jpg", alt, "src")], "cp949")  # WHATWG superset
    thai = extract_page(_legacy_page("ตลาดน้ำดำเนินสะดวก", "windows-874", "cp874", meta=True), "http://t.example/")
    assert (thai.images[0].alt_raw, thai.charset) == ("ตลาดน้ำดำเนินสะดวก", "cp874")


def test_undeclared_windows_1250_czech_page_is_detected() -> None:
    alt = "Pražský hrad v zimě, pohled z Karlova mostu přes řeku Vltavu"
    body = (f'<html><body><p>{alt}. Večerní procházka.</p><img src="a.jpg" alt="{alt}"></body></html>').encode("cp1250")
    page = extract_page(body, "http://c.example/x/")
    assert (page.images[0].alt_raw, page.charset_source) == (alt, "detected")


def test_broken_html_still_yields_every_image_with_its_alt() -> None:
    body = (
        b'<html><head><title>Broken</title><body><div><p><img src="one.jpg" alt="M\xc3\xa1j">'
        b'<table><tr><td><img src=two.jpg alt=Praha width=30px></td><img  SRC="three.jpg" ALT="Brno"></tr>'
        b'<img src="four.jpg" alt="unterminated'
    )
    page = extract_page(body, "http://c.example/d/")
    # As in a browser: the stray <img> in a table row is moved before the table, the tag cut by EOF is dropped.
    assert _tuples(page) == [
        ("http://c.example/d/one.jpg", "Máj", "src"),
        ("http://c.example/d/three.jpg", "Brno", "src"),
        ("http://c.example/d/two.jpg", "Praha", "src"),
    ]
    assert page.images[2].width_attr == 30


def test_data_srcset_and_picture_data_srcset_pick_the_largest_lazy_source() -> None:
    body = b"""<html><body><base href="http://cdn.example/m/">
    <img src="blank.gif" data-srcset="s.jpg 300w, l.jpg 900w" alt="a">
    <picture><source data-srcset="p1.webp 1x, p2.webp 2x"><img src="p.jpg" alt="b"></picture>
    </body></html>"""
    page = extract_page(body, "http://site.example/page")
    assert [(c.image_url, c.source_attr, c.src_url) for c in page.images] == [
        ("http://cdn.example/m/l.jpg", "data-srcset", "http://cdn.example/m/blank.gif"),
        ("http://cdn.example/m/p2.webp", "picture", "http://cdn.example/m/p.jpg"),
    ]


def test_x_robots_tag_noai_opts_the_page_out_even_when_addressed_to_one_bot() -> None:
    body = b'<html><body><img src="a.jpg" alt="x"></body></html>'
    for header, expected in (
        ("noai", (True, "header")),
        ("otherbot: noindex, noimageai", (True, "header")),
        ("noindex, nofollow", (False, None)),
        (None, (False, None)),
    ):
        page = extract_page(body, "http://e.example/", "text/html", header)
        assert (page.opt_out, page.opt_out_source) == expected, header
