"""WARC -> image candidates: ours (``extract_warc``, the raw_crawl code path: FastWARC + lexbor) vs a naive
warcio + BeautifulSoup extraction of the same fields, and vs two floors: FastWARC iteration alone (reading and
gunzipping the records: the decode floor) and FastWARC + a lexbor parse of every page (decode + parse floor).

Pages are generated in-process, ~43 KB each, shaped like a news article: a head with metadata, a large inline
style, inline scripts, navigation, breadcrumbs, text, a related-articles sidebar and a footer, and about 20 images
in every form the extractor handles: plain ``src`` (relative, ``../``, root-relative, protocol-relative, absolute
with a query), ``srcset`` with width descriptors, ``data-src`` / ``data-srcset`` behind a placeholder,
``<picture><source srcset>``, ``<figure>`` with a caption, a ``data:`` URI (skipped), a tracking pixel; a third
of the pages have ``<base href>``.

Two comparisons, each like for like: the default (context = the ``<figcaption>`` only) against a baseline that
computes the same, and ``nearby_context=True`` (an image without a caption takes the bounded text around it)
against a baseline with the same nearby-text definition. In each, both extractors must give the same (page URL,
image URL, alt, context text) candidates, or the run fails: the ratio compares equal work. The baseline is what a
first implementation looks like: warcio's ``content_stream()``, ``BeautifulSoup(body, "html.parser")`` (bs4's own
parser, no extra dependency), ``urljoin`` per URL. The two floors are compared with the default.

Single-threaded; pages/s/core is pages per second of this process's CPU time, so that other processes taking turns
on a shared machine do not count against either side (wall-clock medians and the load average are in the notes).
The six variants alternate run by run, so that what load does to caches falls on all alike; medians of 5 runs
(quick: 3) after one warm-up run (none for BeautifulSoup: ~10 s a run).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.crawl.html import extract_warc
from mella_assets.demo.corpus import warc_bytes

WORDS = [
    "Praha", "hrad", "most", "řeka", "Vltava", "zámek", "náměstí", "kostel", "katedrála", "muzeum", "galerie",
    "výstava", "festival", "tradice", "kroj", "vánoční", "trh", "velikonoce", "pivo", "knedlík", "guláš", "koláč",
    "svíčková", "lázně", "hory", "Šumava", "Krkonoše", "jezero", "les", "louka", "město", "vesnice", "příroda",
    "historie", "památka", "obraz", "socha", "divadlo", "koncert", "hudba",
]  # fmt: skip
TARGET_PAGE_BYTES = 43_000
IMAGES_PER_ARTICLE = 16


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _content_image(rng: random.Random, page: int, number: int) -> str:
    """One article image; the form cycles so that every page has each kind."""
    alt = _words(rng, 2, 6)
    name = f"{page}-{number}"
    kind = number % 10
    if kind == 0:
        return f'<img src="foto-{name}.jpg" alt="{alt}" width="640" height="480" loading="lazy">'
    if kind == 1:
        return (
            f'<img srcset="/img/s/{name}.jpg 320w, /img/m/{name}.jpg 800w, /img/l/{name}.jpg 1600w" '
            f'sizes="(max-width: 800px) 100vw, 800px" src="/img/m/{name}.jpg" alt="{alt}">'
        )
    if kind == 2:
        return f'<img class="lazy" src="/static/blank.gif" data-src="/lazy/{name}.jpg" alt="{alt}" width="800">'
    if kind == 3:
        return (
            f'<picture><source type="image/avif" srcset="/p/{name}.avif 1x, /p/{name}@2x.avif 2x">'
            f'<source srcset="/p/{name}.webp 1x, /p/{name}@2x.webp 2x"><img src="/p/{name}.jpg" alt="{alt}"></picture>'
        )
    if kind == 4:
        return (
            f'<figure class="photo"><img src="../galerie/{name}.png" alt="{alt}">'
            f"<figcaption>{_words(rng, 5, 12)} <span class=author>Foto: {rng.choice(WORDS)}</span></figcaption>"
            "</figure>"
        )
    if kind == 5:
        return (
            f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-srcset="/ds/{name}-a.jpg 480w, '
            f'/ds/{name}-b.jpg 960w" alt="{alt}">'
        )
    if kind == 6:
        return f'<img src="https://cdn.example.net/i/{name}.jpg?w=1200&amp;q=80" alt="{alt}">'
    if kind == 7:
        return f'<img src="//static.example.org/media/{name}.webp" alt="{alt}" title="{_words(rng, 1, 3)}">'
    if kind == 8:
        # Not a usable URL: counted as skipped by both.
        return '<img src="data:image/svg+xml;base64,PHN2Zy8+" alt="">'
    return f'<img src="/obrazky/{name}.jpeg" alt="{alt}" height="300px">'


def make_page(rng: random.Random, index: int) -> str:
    """One ~43 KB article page."""
    title = _words(rng, 3, 8)
    head = [
        f'<!doctype html><html lang="cs"><head><meta charset="utf-8"><title>{title}</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="description" content="{_words(rng, 10, 20)}">',
        f'<meta property="og:title" content="{title}"><meta property="og:locale" content="cs_CZ">',
        f'<meta property="og:image" content="https://www.example.cz/og/{index}.jpg">',
        '<link rel="stylesheet" href="/css/site.css"><link rel="icon" href="/favicon.ico">',
        "<style>"
        + " ".join(f".c{i}{{margin:{i}px;color:#{i:06x};padding:0 {i % 7}em}}" for i in range(110))
        + "</style>",
        '<script type="application/ld+json">{"@context":"https://schema.org","@type":"NewsArticle","headline":"'
        + title
        + '"}</script>',
        "<script>window.dataLayer=window.dataLayer||[];var cfg="
        + str([round(rng.random(), 6) for _ in range(120)])
        + ";</script>",
    ]
    if index % 3 == 0:
        head.append('<base href="https://cdn.example.cz/media/">')
    head.append("</head>")
    nav = "".join(f'<li><a href="/sekce/{i}">{rng.choice(WORDS)}</a></li>' for i in range(40))
    body = [
        '<body class="article"><header><a href="/"><img src="/static/logo.svg" alt="Example"></a>',
        f'<nav><ul class="menu">{nav}</ul></nav></header>',
        '<div class="breadcrumbs"><a href="/">Domů</a> › <a href="/zpravy">Zprávy</a></div>',
        f'<main><article><h1>{title}</h1><p class="perex"><strong>{_words(rng, 20, 40)}</strong></p>',
    ]
    images = 0
    sidebar = "".join(
        f'<li><a href="/clanek/{index + k}"><img src="/thumb/{index}-{k}.jpg" '
        f'srcset="/thumb/{index}-{k}.jpg 1x, /thumb/{index}-{k}@2x.jpg 2x" alt="{_words(rng, 2, 4)}"></a></li>'
        for k in range(3)
    )
    tail = (
        f'</article><aside><h2>Související</h2><ul class="related">{sidebar}</ul></aside></main>'
        f"<footer><p>© 2026 Example</p>{''.join(f'<a href=/p/{i}>{rng.choice(WORDS)}</a> ' for i in range(20))}"
        f'<img src="https://t.example.com/p.gif?page={index}" width="1" height="1" alt=""></footer>'
        "<script>(function(){var s=document.createElement('script');s.async=true;})();</script></body></html>"
    )
    size = sum(map(len, head)) + sum(map(len, body)) + len(tail)
    while size < TARGET_PAGE_BYTES or images < IMAGES_PER_ARTICLE:
        paragraph = f"<p class='c{rng.randint(0, 109)}'>{_words(rng, 40, 90)}</p>"
        body.append(paragraph)
        size += len(paragraph)
        if images < IMAGES_PER_ARTICLE:
            image = _content_image(rng, index, images)
            body.append(image)
            size += len(image)
            images += 1
    return "".join(head) + "".join(body) + tail


def build_warc(path: Path, pages: int) -> int:
    """Write ``pages`` pages as a gzipped WARC; returns the mean page size in bytes."""
    rng = random.Random(7)
    records = [(f"https://www.example.cz/clanek/{i}", make_page(rng, i), []) for i in range(pages)]
    path.write_bytes(warc_bytes(records))
    return sum(len(html.encode()) for _, html, _ in records) // pages


# -- the baseline -----------------------------------------------------------------------------------
def candidates(frame: pl.DataFrame) -> list[tuple]:
    """(page URL, image URL, alt, context text) of every candidate in an ``extract_warc`` table."""
    return [
        (url, image["image_url"], image["alt_raw"], image["context_text"])
        for url, images in frame.select("page_url", "images").iter_rows()
        for image in images
    ]


# The nearby-text definition of mella_assets.crawl.html, by tag name (see its _nearby_text docstring).
_BS4_TEXT_BLOCKS = {"p", "li", "td", "th", "dd", "dt", "caption", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6"}
_BS4_INLINE = {
    *("a", "span", "picture", "b", "i", "em", "strong", "small", "u", "s", "mark", "font", "label", "cite"),
    *("q", "sub", "sup", "abbr", "code", "big"),
}
_BS4_TEXT_SIBLINGS = _BS4_TEXT_BLOCKS | (_BS4_INLINE - {"picture"})
_BS4_NOT_TEXT = {"script", "style", "noscript", "template"}
_BS4_SKIPPED_SIBLINGS = _BS4_NOT_TEXT | {"br"}
_BS4_NEARBY_MAX = 200


def _bs4_text(node) -> str:
    """The text of a node, whitespace collapsed, without script / style / noscript / template text or comments."""
    from bs4 import Comment, NavigableString

    if isinstance(node, Comment):
        return ""
    if isinstance(node, NavigableString):
        return " ".join(node.split())
    if node.name in _BS4_NOT_TEXT:
        return ""
    return " ".join(" ".join(_bs4_text(child) for child in node.children).split())


def _bs4_head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[:cut] if cut > 0 else text[:limit]


def _bs4_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.find(" ", len(text) - limit - 1)
    return text[cut + 1 :] if cut >= 0 else text[-limit:]


def _bs4_sibling_text(siblings) -> str:
    """The text of the nearest sibling within 4 steps that is text-bearing; anything else (an image, a list, ...)
    stops the search, blank text, comments and script / style / noscript / template / br are stepped over."""
    from bs4 import Comment, NavigableString

    for step, node in enumerate(siblings):
        if step == 4:
            break
        if isinstance(node, Comment):
            continue
        if isinstance(node, NavigableString):
            if node.strip():
                return _bs4_text(node)
            continue
        if node.name in _BS4_TEXT_SIBLINGS:
            return _bs4_text(node)
        if node.name not in _BS4_SKIPPED_SIBLINGS:
            return ""
    return ""


def _bs4_nearby(img) -> str | None:
    """The text around an image, as mella_assets.crawl.html defines it, by plain BeautifulSoup navigation."""
    branch, block = img, img.parent
    for _level in range(4):
        if block is None or block.name not in _BS4_INLINE:
            break
        branch, block = block, block.parent
    if block is None:
        return None
    if block.name in _BS4_TEXT_BLOCKS:
        return _bs4_head(_bs4_text(block), _BS4_NEARBY_MAX) or None
    before = _bs4_sibling_text(branch.previous_siblings)
    after = _bs4_sibling_text(branch.next_siblings)
    if branch is not img:
        after = " ".join(f"{_bs4_text(branch)} {after}".split())
    if not before:
        return _bs4_head(after, _BS4_NEARBY_MAX) or None
    if not after:
        return _bs4_tail(before, _BS4_NEARBY_MAX) or None
    half = _BS4_NEARBY_MAX // 2
    shown_before = _bs4_tail(before, half)
    shown_after = _bs4_head(after, _BS4_NEARBY_MAX - 1 - len(shown_before))
    if len(shown_after) < half and len(before) > len(shown_before):
        shown_before = _bs4_tail(before, _BS4_NEARBY_MAX - 1 - len(shown_after) if shown_after else _BS4_NEARBY_MAX)
    return " ".join(part for part in (shown_before, shown_after) if part) or None


def _bs4_url(base: str, raw: str | None) -> str | None:
    if not raw or not raw.strip():
        return None
    url = urldefrag(urljoin(base, raw.strip())).url
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.hostname else None


def _bs4_largest(base: str, srcsets: list[str | None]) -> str | None:
    best = None
    for srcset in srcsets:
        for candidate in (srcset or "").split(","):
            bits = candidate.split()
            if not bits:
                continue
            descriptor = bits[1] if len(bits) > 1 else "1x"
            rank = (descriptor.endswith("w"), float(descriptor[:-1]))
            if best is None or rank > best[0]:
                best = (rank, bits[0])
    return _bs4_url(base, best[1]) if best else None


def beautifulsoup(path: Path, nearby_context: bool = False) -> list[tuple]:
    """The naive baseline: the same fields (page lang and title, base href, picture / data-srcset / srcset /
    data-src / src, alt, title, width, height, figcaption, else with ``nearby_context`` the nearby text) with
    warcio + BeautifulSoup(html.parser)."""
    from bs4 import BeautifulSoup
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type != "response" or record.http_headers.get_statuscode() != "200":
                continue
            if "html" not in (record.http_headers.get_header("Content-Type") or ""):
                continue
            page_url = record.rec_headers.get_header("WARC-Target-URI")
            soup = BeautifulSoup(record.content_stream().read(), "html.parser")
            base_tag = soup.find("base", href=True)
            base = urljoin(page_url, base_tag["href"]) if base_tag else page_url
            page = {
                "lang": (soup.html.get("lang") or "").lower() if soup.html else "",
                "title": soup.title.get_text(" ", strip=True) if soup.title else None,
            }
            for img in soup.find_all("img"):
                url = None
                if img.parent is not None and img.parent.name == "picture":
                    sources = img.parent.find_all("source")
                    url = _bs4_largest(base, [s.get("data-srcset") or s.get("srcset") for s in sources])
                url = url or _bs4_largest(base, [img.get("data-srcset")]) or _bs4_largest(base, [img.get("srcset")])
                data_src = img.get("data-src")
                if not url and data_src and not data_src.startswith("data:"):
                    url = _bs4_url(base, data_src)
                url = url or _bs4_url(base, img.get("src"))
                if url is None:
                    continue
                figure = img.find_parent("figure")
                caption = figure.find("figcaption") if figure else None
                context = " ".join(caption.get_text(" ").split())[:300] if caption else None
                candidate = {
                    "alt": img.get("alt"),
                    "title": img.get("title"),
                    "width": img.get("width"),
                    "height": img.get("height"),
                    "context": context or (_bs4_nearby(img) if nearby_context else None),
                    **page,
                }
                out.append((page_url, url, candidate["alt"], candidate["context"]))
    return out


# -- floors --------------------------------------------------------------------------------------------------
def fastwarc_iteration(path: Path) -> int:
    """Read and gunzip every response record's body: the least any WARC extraction must do."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    count = 0
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle, record_types=WarcRecordType.response, parse_http=True):
            record.reader.read()
            count += 1
    return count


def fastwarc_and_parse(path: Path) -> int:
    """The decode floor plus a lexbor parse of every page: the least a DOM-based extraction must do."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from selectolax.lexbor import LexborHTMLParser

    count = 0
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle, record_types=WarcRecordType.response, parse_http=True):
            LexborHTMLParser(record.reader.read())
            count += 1
    return count


def _alternating(
    variants: dict[str, tuple[Callable[[], int], int]], runs: int
) -> tuple[dict[str, Measurement], dict[str, Measurement]]:
    """Each variant ``(fn, warmup)`` warmed up, then run once per round, round after round; returns the rates
    per CPU second of this process (pages/s/core, unaffected by other processes taking turns on the core) and
    per wall-clock second."""
    for fn, warmup in variants.values():
        for _ in range(warmup):
            fn()
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    items: dict[str, int] = {}
    for _ in range(runs):
        for name, (fn, _warmup) in variants.items():
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            items[name] = fn()
            cpu[name].append(items[name] / max(time.process_time() - cpu_started, 1e-9))
            wall[name].append(items[name] / max(time.perf_counter() - wall_started, 1e-9))
    return (
        {name: Measurement(items[name], rates) for name, rates in cpu.items()},
        {name: Measurement(items[name], rates) for name, rates in wall.items()},
    )


def run(quick: bool) -> list[Row]:
    pages = 300 if quick else 2000
    runs = 3 if quick else 5
    outputs: dict[str, list | pl.DataFrame] = {}

    def timed_ours(name: str, nearby_context: bool) -> Callable[[], int]:
        def timed() -> int:
            frame = outputs[name] = extract_warc(path, nearby_context=nearby_context)
            return frame.height

        return timed

    def timed_beautifulsoup(name: str, nearby_context: bool) -> Callable[[], int]:
        def timed() -> int:
            outputs[name] = beautifulsoup(path, nearby_context=nearby_context)
            return len({candidate[0] for candidate in outputs[name]})

        return timed

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.warc.gz"
        mean_bytes = build_warc(path, pages)
        measured, wall_clock = _alternating(
            {
                "ours": (timed_ours("ours", False), 1),
                "bs4": (timed_beautifulsoup("bs4", False), 0),
                "ours_nearby": (timed_ours("ours_nearby", True), 1),
                "bs4_nearby": (timed_beautifulsoup("bs4_nearby", True), 0),
                "decode": (lambda: fastwarc_iteration(path), 1),
                "parse": (lambda: fastwarc_and_parse(path), 1),
            },
            runs,
        )
    # A ratio compares equal work only if both found the same candidates, context included (ours listed as the
    # baseline lists them only now, outside the timed runs, as before).
    outputs["ours"], outputs["ours_nearby"] = candidates(outputs["ours"]), candidates(outputs["ours_nearby"])
    for ours, theirs in (("ours", "bs4"), ("ours_nearby", "bs4_nearby")):
        if sorted(outputs[ours], key=repr) != sorted(outputs[theirs], key=repr):
            only_ours = set(outputs[ours]) - set(outputs[theirs])
            only_theirs = set(outputs[theirs]) - set(outputs[ours])
            raise RuntimeError(
                f"extractors disagree ({ours}): {len(only_ours)} candidates only ours, {len(only_theirs)} only bs4's"
            )
    with_context = {
        name: sum(candidate[3] is not None for candidate in outputs[name]) for name in ("ours", "ours_nearby")
    }
    notes = {
        "pages": pages,
        "mean_page_bytes": mean_bytes,
        "candidates": len(outputs["ours"]),
        "candidates_with_context": with_context["ours"],
        "candidates_equal_to_baseline": True,
        "threads": 1,
        "clock": "process CPU time",
        "wall_clock_medians": {name: round(m.median, 1) for name, m in wall_clock.items()},
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    return [
        compare(
            "WARC → image candidates (pages/s/core)",
            "pages/s",
            measured["ours"],
            measured["bs4"],
            "warcio + BeautifulSoup(html.parser), figcaption context",
            **notes,
        ),
        compare(
            "WARC → image candidates + nearby text (pages/s/core)",
            "pages/s",
            measured["ours_nearby"],
            measured["bs4_nearby"],
            "warcio + BeautifulSoup(html.parser), figcaption else nearby-text context",
            **{**notes, "candidates_with_context": with_context["ours_nearby"], "nearby_context": True},
        ),
        compare(
            "extraction vs decode floor",
            "pages/s",
            measured["ours"],
            measured["decode"],
            "FastWARC iteration only",
            **notes,
        ),
        compare(
            "extraction vs decode + parse floor",
            "pages/s",
            measured["ours"],
            measured["parse"],
            "FastWARC + lexbor parse only",
            **notes,
        ),
    ]
