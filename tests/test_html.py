"""HTML decoding and image candidate extraction for raw_crawl."""

from __future__ import annotations

import random
import time
from urllib.parse import urldefrag, urljoin, urlsplit

import polars as pl

from mella_assets.crawl.html import (
    NEARBY_TEXT_MAX_CHARS,
    RAW_CRAWL_SCHEMA,
    ImageCandidate,
    UrlResolver,
    _head,
    _parse_srcset_by_chars,
    _tail,
    extract_page,
    pages_to_frame,
    parse_srcset,
)
from mella_assets.crawl.warc import HtmlResponse

PAGE_URL = "https://WWW.Example.cz:8443/clanky/hrad.html?x=1#top"
PAGE = """<!doctype html>
<html lang="CS">
<head>
  <meta charset="utf-8">
  <meta name="robots" content="index, NoAI">
  <meta property="og:locale" content="cs_CZ">
  <meta property="og:site_name" content="Hrady  a zámky">
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
        "https://cdn.example.cz/fig.png", "figcaption",
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

    assert (page.domain, page.html_lang, page.og_locale, page.title, page.site_name) == (
        "www.example.cz",
        "cs",
        "cs_CZ",
        "Pražský hrad",
        "Hrady a zámky",  # og:site_name, whitespace collapsed
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
        "site_name": "Hrady a zámky",
        "fetch_date": "2024-05-01T10:00:00Z",
        "opt_out": True,
        "opt_out_source": "meta",
        "charset_source": "meta",
    }
    assert [image["image_url"] for image in row["images"]] == [c.image_url for c in EXPECTED_IMAGES]
    assert row["images"][4]["context_text"] == "Katedrála sv. Víta v noci"
    assert row["images"][4]["context_source"] == "figcaption"


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


def _resolve_by_definition(base: str, raw: str) -> str | None:
    """What a resolved URL means, written out with urllib: tabs and newlines dropped, whitespace stripped,
    urljoin, fragment dropped, kept only if http(s) with a host."""
    value = raw.replace("\t", "").replace("\n", "").replace("\r", "").strip()
    if not value:
        return None
    try:
        url = urldefrag(urljoin(base, value)).url
        parts = urlsplit(url)
        if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            return None
    except ValueError:
        return None
    return url


RESOLVER_BASES = [
    "https://www.example.cz/clanky/hrad.html?x=1#top",
    "https://WWW.Example.cz:8443/a/b/",
    "http://h.cz",
    "http://h.cz?q=1",
    "https://h.cz/a//b/../c/d.html",
    "https://h.cz/a/./b",
    "https://h.cz/a/..",
    "https://h.cz/a;p/b;q?r#s",
    "HTTPS://H.CZ/A/",
    "https://user:pw@h.cz:81/x/",
    "http://[::1]:8080/x/y",
    "https://bücher.de/straße/",
    "https://h.cz/a b/c",
    "https://h.cz/a\\b/c",
    "https://h.cz:/x",
    "ftp://h.cz/x/",
    "https:///nohost/x",
    "file:///tmp/x.html",
]
RESOLVER_PIECES = [
    "a", "b.jpg", "/", "//", ".", "..", "./", "../", "?", "?q=1", "&w=2", "#", "#frag", ";p", ":", "@", "%20",
    " ", "\t", "\n", "\u00a0", "\u3000", "\\", "ü", "😀", "http:", "https:", "HTTP:", "http://", "https://",
    "javascript:", "data:", "mailto:", "h.cz", "cdn.example.org", "xn--bcher-kva.de", "bücher.de", ":8080", ":",
    "[::1]", "user@", "~", "'", '"', "(", ")", "=", "x,y", "*",
]  # fmt: skip


def test_url_resolver_gives_exactly_urljoins_result_on_tricky_values() -> None:
    rng = random.Random(20261126)
    values = [
        "", " ", "a.jpg", "../a.jpg", "./a.jpg", "/a.jpg", "//cdn.x.cz/a.jpg", "https://x.cz/a.jpg", "?q", "#f",
        "javascript:alert(1)", "data:image/gif;base64,R0l", " b.jpg\n", "a\\b.jpg", "//x.cz:80", "//x.cz:",
        "http:a.jpg", "HTTPS://X.CZ/A", "https://bücher.de/a", "//[::1]/a", "a//b", "a/./b", "a/../b", "a.jpg?",
        "a.jpg?#", "/?q", "\u00a0a.jpg", "a.jpg\u3000", "https://x.cz/a/../b;c?d", "//x.cz/a;b", "C:\\pics\\a.jpg",
        "mailto:x@y.cz",
    ]  # fmt: skip
    values += ["".join(rng.choice(RESOLVER_PIECES) for _ in range(rng.randint(1, 6))) for _ in range(4000)]
    checked = fast = 0
    for base in RESOLVER_BASES:
        resolver = UrlResolver(base)
        for value in values:
            expected = _resolve_by_definition(base, value)
            assert resolver.resolve(value) == expected, (base, value)
            checked += 1
            fast += resolver._joined(value) is not None
    # The plain shapes (the fast path) and everything else (urljoin) were both exercised.
    assert checked == len(RESOLVER_BASES) * len(values)
    assert 0.1 * checked < fast < 0.9 * checked


def test_srcset_regex_tokenizer_matches_the_char_by_char_one() -> None:
    rng = random.Random(7)
    pieces = ["a.jpg", "b,c.jpg", " ", ",", ", ", "100w", "2x", "1.5x", "\t", "\u00a0", "d.png,", "w", "x", ",,"]
    for _ in range(5000):
        srcset = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert parse_srcset(srcset) == _parse_srcset_by_chars(srcset), srcset


def test_invalid_bytes_in_a_declared_utf8_page_become_replacement_characters() -> None:
    body = b'<html><head><meta charset="utf-8"></head><body><img src="a.jpg" alt="Br\xffno \xed\xa0\x80 \xc3"></body>'

    for content_type in (None, "text/html; charset=utf-8"):
        page = extract_page(body, "http://c.example/", content_type)
        # The parser is fed the bytes as they are; its replacement of invalid UTF-8 equals Python's.
        assert page.images[0].alt_raw == "Br\ufffdno \ufffd\ufffd\ufffd \ufffd"
        assert page.charset == "utf-8"


def test_nearest_figure_gives_the_caption_and_picture_sources_inside_nested_pictures_count() -> None:
    body = b"""<html><body>
    <figure><figcaption>Outer</figcaption>
      <img src="outer.jpg">
      <figure><img src="inner.jpg"><figcaption>Inner</figcaption></figure>
    </figure>
    <figure><p><img src="nocaption.jpg"></p></figure>
    <picture><source srcset="small.webp 300w"><div><source srcset="ignored.webp 900w"></div>
      <img src="pic.jpg"></picture>
    </body></html>"""

    page = extract_page(body, "http://f.example/")

    assert [(c.image_url, c.source_attr, c.context_text) for c in page.images] == [
        ("http://f.example/outer.jpg", "src", "Outer"),
        ("http://f.example/inner.jpg", "src", "Inner"),
        ("http://f.example/nocaption.jpg", "src", None),
        ("http://f.example/small.webp", "picture", None),
    ]


def _contexts(body: str, nearby_context: bool = True) -> list[tuple[str, str | None, str | None]]:
    """(file name, context, source) per image; nearby text on unless told (the tests below are about it)."""
    page = extract_page(body.encode("utf-8"), "http://n.example/", nearby_context=nearby_context)
    return [(c.image_url.rsplit("/", 1)[1], c.context_text, c.context_source) for c in page.images]


def test_default_context_is_the_figcaption_only_and_nearby_text_is_opt_in() -> None:
    body = """<html><body>
    <p>Pohled na Karlův most <img src="p.jpg"></p>
    <figure><img src="fig.jpg"><figcaption>Popisek</figcaption></figure>
    </body></html>"""

    assert _contexts(body, nearby_context=False) == [("p.jpg", None, None), ("fig.jpg", "Popisek", "figcaption")]
    assert _contexts(body) == [("p.jpg", "Pohled na Karlův most", "nearby"), ("fig.jpg", "Popisek", "figcaption")]
    # The default of extract_page is figcaption only.
    page = extract_page(body.encode("utf-8"), "http://n.example/")
    assert [(c.context_text, c.context_source) for c in page.images] == [(None, None), ("Popisek", "figcaption")]


def test_image_inside_a_paragraph_takes_the_paragraph_text_without_its_alt() -> None:
    body = """<html><body><article>
    <p>Pohled na   <a href="/most"><img src="most.jpg" alt="Karlův most"></a> z <b>Petřína</b>
       v zimě.</p>
    </article></body></html>"""

    assert _contexts(body) == [("most.jpg", "Pohled na z Petřína v zimě.", "nearby")]


def test_image_inside_a_list_item_and_a_table_cell_takes_their_text() -> None:
    body = """<html><body>
    <ul><li><span><img src="li.jpg"></span> Hradčany na jaře</li><li>Jiná položka</li></ul>
    <table><tr><td>Staroměstský orloj <img src="td.jpg"></td><td>jiná buňka</td></tr></table>
    </body></html>"""

    assert _contexts(body) == [
        ("li.jpg", "Hradčany na jaře", "nearby"),
        ("td.jpg", "Staroměstský orloj", "nearby"),
    ]


def test_image_inside_a_div_takes_the_nearest_sibling_text_on_each_side() -> None:
    body = """<html><body>
    <div>Západ slunce <img src="direct.jpg"> nad Vltavou</div>
    <div><h3>Vyšehrad</h3>
      <!-- a comment --> <a href="/v"><img src="between.jpg"></a>
      <p>Hradby   nad řekou</p>
      <p>Druhý odstavec je dál.</p>
    </div>
    <div class="gallery"><img src="g1.jpg"><img src="g2.jpg"><p>Za galerií</p></div>
    <div><a href="/clanek"><img src="link.jpg" alt="Náhled"> Přečtěte si   článek</a><span>(5 minut)</span></div>
    </body></html>"""

    assert _contexts(body) == [
        ("direct.jpg", "Západ slunce nad Vltavou", "nearby"),
        ("between.jpg", "Vyšehrad Hradby nad řekou", "nearby"),
        # The nearest sibling of g1 is another image: no text; g2 has a paragraph after it.
        ("g1.jpg", None, None),
        ("g2.jpg", "Za galerií", "nearby"),
        # The link's own text comes first, then the nearest text after the link.
        ("link.jpg", "Přečtěte si článek (5 minut)", "nearby"),
    ]


def test_figcaption_still_wins_over_nearby_text_and_an_empty_one_falls_back() -> None:
    body = """<html><body>
    <figure><p>Text u obrázku <img src="cap.jpg"></p><figcaption>Popisek</figcaption></figure>
    <figure><p>Jen odstavec <img src="empty.jpg"></p><figcaption>  </figcaption></figure>
    </body></html>"""

    assert _contexts(body) == [
        ("cap.jpg", "Popisek", "figcaption"),
        ("empty.jpg", "Jen odstavec", "nearby"),
    ]


def test_long_paragraph_is_cut_at_a_word_boundary_within_the_bound() -> None:
    words = [f"slovo{i:04d}" for i in range(100)]  # 9 characters each
    body = f"<html><body><p><img src='long.jpg'> {'  '.join(words)}</p></body></html>"

    [(_name, text, source)] = _contexts(body)

    # 20 words and their 19 separating spaces are 199 characters; the 21st word would pass the bound.
    assert NEARBY_TEXT_MAX_CHARS == 200
    assert text == " ".join(words[:20])
    assert len(text) == 199
    assert source == "nearby"


def test_text_on_both_sides_shares_the_bound_and_a_short_side_leaves_the_rest_to_the_other() -> None:
    before = [f"alfa{i:02d}" for i in range(30)]  # 6 characters each: 14 words are 97 characters
    after = [f"beta{i:02d}" for i in range(30)]
    body = f"""<html><body>
    <div><p>{" ".join(before)}</p><img src="both.jpg"><p>{" ".join(after)}</p></div>
    <div><p>{" ".join(before)}</p><img src="short.jpg"><p>konec</p></div>
    </body></html>"""

    assert _contexts(body) == [
        # Before: the last whole words within 100 characters; after: the first within the 102 left.
        ("both.jpg", " ".join(before[16:] + after[:14]), "nearby"),
        # "konec" takes 5 characters and a space: 27 words (188 characters) of the text before fit in 194.
        ("short.jpg", " ".join([*before[3:], "konec"]), "nearby"),
    ]


def test_one_word_longer_than_the_bound_is_cut_at_the_bound() -> None:
    body = f"<html><body><p><img src='word.jpg'>{'x' * 250}</p></body></html>"

    assert _contexts(body) == [("word.jpg", "x" * NEARBY_TEXT_MAX_CHARS, "nearby")]


def test_script_style_noscript_and_template_text_is_not_nearby_text() -> None:
    body = """<html><body>
    <p><script>var tracking = 1;</script>Skutečný <style>p { color: red }</style>text
       <noscript><img src="fallback.jpg"></noscript><template>šablona</template><img src="p.jpg"></p>
    <div><script>window.x = 2;</script><img src="div.jpg"><style>.a {}</style></div>
    </body></html>"""

    assert _contexts(body) == [
        # The <img> inside <noscript> is still a candidate; its own nearest siblings are none.
        ("fallback.jpg", None, None),
        ("p.jpg", "Skutečný text", "nearby"),
        ("div.jpg", None, None),
    ]


def test_image_with_no_text_around_has_no_context() -> None:
    body = """<html><body>
    <img src="body.jpg" alt="Jen alt">
    <div><a href="/x"><img src="linked.jpg" alt="Odkaz"></a></div>
    <p><img src="empty-p.jpg" title="Titulek"></p>
    <section><div><img src="nested.jpg"></div><div>Text jinde</div></section>
    </body></html>"""

    assert _contexts(body) == [
        ("body.jpg", None, None),
        ("linked.jpg", None, None),
        ("empty-p.jpg", None, None),
        ("nested.jpg", None, None),
    ]


def _reference_head(text: str, limit: int) -> str:
    """The definition: collapse all whitespace, then keep the longest run of whole words within ``limit``."""
    collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    cut = collapsed.rfind(" ", 0, limit + 1)
    return collapsed[:cut] if cut > 0 else collapsed[:limit]


def _reference_tail(text: str, limit: int) -> str:
    collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    cut = collapsed.find(" ", len(collapsed) - limit - 1)
    return collapsed[cut + 1 :] if cut >= 0 else collapsed[-limit:]


def test_head_and_tail_cuts_give_exactly_the_collapse_then_cut_definition() -> None:
    rng = random.Random(11)
    pieces = ["a", "slovo", "Vltava", "x" * 130, " ", "  ", "\n", "\t ", "\xa0", "\u3000", "č", "."]
    texts = ["", " ", "a", "x" * 300, " a b ", "ab" * 101]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 120))) for _ in range(1500)]

    for text in texts:
        for limit in (1, 2, 5, 99, 100, 199, 200):
            assert _head(text, limit) == _reference_head(text, limit), (text, limit)
            assert _tail(text, limit) == _reference_tail(text, limit), (text, limit)


# -- teaser evidence: link text, nearby heading, caption markup ----------------------------------------------------
TEASERS = """<html lang="cs"><body>
<ul class="teasers">
  <li><a href="/a/1"><img src="/1.jpg" alt="Vláda schválila rozpočet"></a><h3><a href="/a/1">Vláda schválila
    rozpočet na rok 2027</a></h3><p>Perex prvního článku.</p></li>
  <li><a href="/a/2"><img src="/2.jpg" alt="Most"></a><a href="/a/2" class="title">Karlův most v mlze</a></li>
  <li><a href="/a/3"><img src="/3.jpg" alt="Vltava"><span class="title">Povodně na Vltavě</span></a></li>
</ul>
<div class="card"><div class="media"><img src="/4.jpg" alt="Kapr"></div>
  <div class="body"><span>Rubrika</span><h2>Vánoční trhy začínají</h2></div></div>
<figure><img src="/5.jpg" alt="Hrad"><figcaption>Pražský hrad v zimě</figcaption></figure>
<figure><img src="/6.jpg" alt="Prázdný popisek"><figcaption> </figcaption></figure>
<div class="wp-caption"><img src="/7.jpg" alt="Katedrála"><p class="wp-caption-text">Katedrála sv. Víta</p></div>
<div><img src="/8.jpg" alt="Trh"><span itemprop="caption">Trh na náměstí</span></div>
<div class="photo-caption"></div>
<h1>Titulek stránky</h1>
<p>Text článku <img src="/9.jpg" alt="Obrázek v textu"> pokračuje.</p>
<p><img src="/10.jpg"></p>
</body></html>"""


def test_each_image_with_an_alt_gets_its_link_text_nearby_heading_and_caption_markup() -> None:
    page = extract_page(TEASERS.encode(), "https://www.example.cz/")

    evidence = [(c.image_url.rsplit("/", 1)[1], c.link_text, c.nearby_heading, c.caption_markup) for c in page.images]
    assert evidence == [
        # the image link has no text: the heading's link to the same href, and the heading in the same list item
        ("1.jpg", "Vláda schválila rozpočet na rok 2027", "Vláda schválila rozpočet na rok 2027", None),
        # the image link has no text: the title link to the same href (and no heading in the card)
        ("2.jpg", "Karlův most v mlze", None, None),
        # the link holds the image and its title
        ("3.jpg", "Povodně na Vltavě", None, None),
        # a heading in the card's other column, two levels up
        ("4.jpg", None, "Vánoční trhy začínají", None),
        ("5.jpg", None, None, "figcaption"),
        # an empty figcaption is no caption
        ("6.jpg", None, None, None),
        ("7.jpg", None, None, "class"),
        ("8.jpg", None, None, "itemprop"),
        # the page's top level is not a card: the <h1> beside the paragraph is not this image's heading
        ("9.jpg", None, None, None),
        # no alt: no evidence looked for
        ("10.jpg", None, None, None),
    ]


def test_a_heading_in_another_card_is_not_taken() -> None:
    body = """<html><body><ul><li><img src="/a.jpg" alt="První"></li><li><h3>Druhý článek</h3></li></ul>
    <article><img src="/b.jpg" alt="Třetí"></article><article><h2>Čtvrtý článek</h2></article></body></html>"""
    page = extract_page(body.encode(), "https://www.example.cz/")

    assert [c.nearby_heading for c in page.images] == [None, None]


def test_evidence_columns_are_in_the_raw_crawl_schema() -> None:
    images = RAW_CRAWL_SCHEMA["images"].inner
    names = [f.name for f in images.fields]
    assert {"link_text", "nearby_heading", "caption_markup"} <= set(names)
    assert all(images.fields[names.index(n)].dtype == pl.String for n in ("link_text", "nearby_heading"))


def _evidence_seconds(body: str) -> float:
    start = time.perf_counter()
    extract_page(body.encode(), "http://e.example/")
    return time.perf_counter() - start


def test_teaser_evidence_stays_linear_on_hostile_shapes() -> None:
    # Shapes where a naive search is quadratic: every image of one huge link or card reading the same big
    # heading / link text, every image looking for a same-href link among thousands, deep nesting around each.
    heading = "<h3>" + "<b></b>" * 20_000 + "Nadpis</h3>"
    shapes = {
        "one_link": lambda n: "<a href='/x'>" + "<img src='i.jpg' alt='a b c'>" * n + "text</a>",
        "one_card": lambda n: "<div>" + heading + "<span><img src='i.jpg' alt='a b c'></span>" * n + "</div>",
        "same_href": lambda n: ("<a href='/x'><img src='i.jpg' alt='a b c'></a>" + "<a href='/x'></a>" * 8) * n,
        "one_div_of_image_links": lambda n: "<div>" + "<a href='/x'><img src='i.jpg' alt='a b c'></a>" * n + "</div>",
        "one_div_of_distinct_links": lambda n: (
            "<div>" + "".join(f"<a href='/x{i}'><img src='i.jpg' alt='a b c'></a>" for i in range(n)) + "</div>"
        ),
        "nested": lambda n: (
            ("<div class='caption'>x" * 50 + "<a href='/y'><img src='i.jpg' alt='a'></a>")
            + "</div>" * 50 * 1
            + "<div><h2>h</h2><a href='/y'><img src='j.jpg' alt='a'></a></div>" * n
        ),
    }
    for name, shape in shapes.items():
        small, large = (_evidence_seconds(f"<html><body>{shape(n)}</body></html>") for n in (200, 1600))
        # 8x the images: ~8x the time when linear, 64x when quadratic.
        assert large < max(20 * small, 0.5), (name, small, large)
    page = extract_page(
        f"<html><body><div>{heading}<img src='i.jpg' alt='a'></div></body></html>".encode(), "http://e/"
    )
    assert page.images[0].nearby_heading == "Nadpis"
