"""Decode an HTML page and list its ``<img>`` candidates (the unfiltered input of ``raw_crawl``).

Charset order (recorded in :attr:`Page.charset_source`): HTTP header > BOM > ``<meta charset>`` /
``http-equiv`` > detection (strict UTF-8, then charset_normalizer) > UTF-8 with replacement characters.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urldefrag, urljoin, urlsplit

import charset_normalizer
import polars as pl
from selectolax.lexbor import LexborHTMLParser, LexborNode

from mella_assets.lib.warc import WarcStats, iter_html_responses

if TYPE_CHECKING:
    from pathlib import Path

    from mella_assets.lib.warc import HtmlResponse

CONTEXT_TEXT_MAX_CHARS = 300
TITLE_MAX_CHARS = 500
# Only the start of a page is searched for <meta charset>, as browsers do (HTML spec: 1024 bytes; be lenient).
_META_SNIFF_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_WHITESPACE = re.compile(r"\s+")
_LEADING_INT = re.compile(r"^\s*(\d+)(?:\.\d*)?\s*(?:px)?\s*$", re.IGNORECASE)
# Lazy-loading placeholders: a real image URL sits in data-src / data-srcset instead.
_PLACEHOLDER = re.compile(
    r"(?:^|/)(?:blank|spacer|placeholder|pixel|transparent|lazy|1x1)[\w-]*\.(?:gif|png|svg)$",
    re.IGNORECASE,
)
OPT_OUT_ROBOTS_TOKENS = frozenset({"noai", "noimageai"})


@dataclass(frozen=True)
class ImageCandidate:
    """One ``<img>`` as the page offers it; nothing filtered except unusable URLs."""

    image_url: str
    alt_raw: str | None
    title_attr: str | None
    width_attr: int | None
    height_attr: int | None
    source_attr: str
    context_text: str | None
    src_url: str | None = None  # the plain ``src`` resolved, whatever ``image_url`` was chosen from


@dataclass
class Page:
    """What ``raw_crawl`` keeps of one HTML page."""

    page_url: str
    domain: str
    charset: str
    charset_source: str
    html_lang: str | None
    og_locale: str | None
    title: str | None
    opt_out: bool = False
    opt_out_source: str | None = None
    images: list[ImageCandidate] = field(default_factory=list)
    skipped_urls: int = 0


# -- charset -------------------------------------------------------------------------------------------------
# WHATWG Encoding: labels that mean a superset codec (browsers decode them so) or that Python does not know.
_LABEL_ALIASES = {
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "dos-874": "cp874",
    "iso-8859-11": "cp874",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "windows-949": "cp949",
    "x-cp1250": "cp1250",
    "x-cp1251": "cp1251",
    "gb2312": "gbk",
    "shift_jis": "cp932",
}


def _codec_name(label: str | bytes | None) -> str | None:
    """Python's codec name for a charset label, or None if unknown; Latin-1/ASCII read as windows-1252."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    label = label.strip().strip("\"'").lower()
    label = _LABEL_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    # HTML spec: these labels mean windows-1252, which also defines bytes 0x80-0x9F.
    if name in {"latin-1", "iso8859-1", "ascii"}:
        return "cp1252"
    return name


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Decode a page; returns ``(text, charset, charset_source)``."""
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        name = _codec_name(match.group(1)) if match else None
        if name:
            return body.decode(name, errors="replace"), name, "http_header"
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace"), name, "bom"
    match = _META_CHARSET.search(body[:_META_SNIFF_BYTES])
    name = _codec_name(match.group(1)) if match else None
    if name and name.startswith("utf-16"):
        # A page whose <meta> can be read as ASCII is not UTF-16 (HTML spec rule).
        name = "utf-8"
    if name:
        return body.decode(name, errors="replace"), name, "meta"
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body).best()
    name = _codec_name(best.encoding) if best is not None else None
    if name:
        return body.decode(name, errors="replace"), name, "detected"
    return body.decode("utf-8", errors="replace"), "utf-8", "fallback"


# -- urls and attributes -------------------------------------------------------------------------------------
def _resolve(base: str, raw: str | None) -> str | None:
    """Absolute http(s) URL without fragment, or None for data:, javascript:, empty or host-less values."""
    if raw is None:
        return None
    # Browsers drop tabs and newlines inside URLs and strip surrounding whitespace.
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


def _is_placeholder(value: str | None) -> bool:
    if value is None or not value.strip():
        return True
    value = value.strip()
    return value.lower().startswith("data:") or bool(_PLACEHOLDER.search(value.split("?", 1)[0]))


def parse_srcset(srcset: str) -> list[tuple[str, float, str]]:
    """``(url, value, kind)`` per candidate, kind ``"w"`` or ``"x"`` (a missing descriptor means ``1x``)."""
    candidates: list[tuple[str, float, str]] = []
    pos, n = 0, len(srcset)
    while pos < n:
        while pos < n and (srcset[pos].isspace() or srcset[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not srcset[pos].isspace():
            pos += 1
        url = srcset[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = pos
            depth = 0
            while pos < n and (srcset[pos] != "," or depth):
                depth += {"(": 1, ")": -1}.get(srcset[pos], 0)
                pos += 1
            descriptor = srcset[start:pos].strip().lower()
        if not url:
            continue
        value, kind = 1.0, "x"
        for token in descriptor.split():
            try:
                if token.endswith("w"):
                    value, kind = float(token[:-1]), "w"
                elif token.endswith("x"):
                    value, kind = float(token[:-1]), "x"
            except ValueError:
                continue
        candidates.append((url, value, kind))
    return candidates


def _largest(base: str, srcsets: Iterable[str | None]) -> str | None:
    """The largest usable candidate over one or more srcset values (``w`` descriptors beat ``x``)."""
    ranked = [
        ((1 if kind == "w" else 0, value), raw) for srcset in srcsets for raw, value, kind in parse_srcset(srcset or "")
    ]
    # Resolving is the costly part: rank first, resolve from the best down until one is usable.
    ranked.sort(key=lambda item: item[0], reverse=True)
    for _rank, raw in ranked:
        url = _resolve(base, raw)
        if url is not None:
            return url
    return None


def _int_attr(value: str | None) -> int | None:
    match = _LEADING_INT.match(value or "")
    return int(match.group(1)) if match else None


def _text(node: LexborNode | None, limit: int) -> str | None:
    if node is None:
        return None
    text = _WHITESPACE.sub(" ", node.text(separator=" ")).strip()
    return text[:limit] if text else None


def _ancestor(node: LexborNode, tag: str) -> LexborNode | None:
    parent = node.parent
    while parent is not None and parent.tag != tag:
        parent = parent.parent
    return parent


def _attr(node: LexborNode, name: str) -> str | None:
    """Attribute value; an attribute present without a value reads as ``""`` (HTML semantics)."""
    attributes = node.attributes
    if name not in attributes:
        return None
    return attributes[name] or ""


def _choose_url(img: LexborNode, base: str, src_url: str | None) -> tuple[str | None, str]:
    """(url, source_attr) the browser would end up showing, after a lazy loader swapped data-* in."""
    picture = img.parent if img.parent is not None and img.parent.tag == "picture" else None
    if picture is not None:
        sources = [s for s in picture.css("source") if s.parent is not None and s.parent.tag == "picture"]
        url = _largest(base, (_attr(s, "data-srcset") or _attr(s, "srcset") for s in sources))
        if url:
            return url, "picture"
    data_srcset, srcset = _attr(img, "data-srcset"), _attr(img, "srcset")
    if data_srcset and (url := _largest(base, [data_srcset])):
        return url, "data-srcset"
    if srcset and (url := _largest(base, [srcset])):
        return url, "srcset"
    data_src = _attr(img, "data-src")
    if data_src and not _is_placeholder(data_src) and (url := _resolve(base, data_src)):
        return url, "data-src"
    return src_url, "src"


# -- page ----------------------------------------------------------------------------------------------------
def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _robots_tokens(value: str) -> set[str]:
    """Directives of a robots meta / ``X-Robots-Tag`` value; a ``bot-name:`` prefix is dropped, so an opt-out
    addressed to any one bot counts for us too (the conservative reading)."""
    tokens = set()
    for part in value.split(","):
        token = part.strip().lower()
        if ":" in token:
            token = token.rsplit(":", 1)[1].strip()
        for word in token.split():
            tokens.add(word)
    return tokens


def header_opts_out(x_robots_tag: str | None) -> bool:
    """True when an ``X-Robots-Tag`` header value carries ``noai`` or ``noimageai``."""
    return bool(_robots_tokens(x_robots_tag or "") & OPT_OUT_ROBOTS_TOKENS)


def _opt_out(tree: LexborHTMLParser) -> bool:
    for meta in tree.css("meta"):
        if (_attr(meta, "name") or "").strip().lower() not in {"robots", "mella"}:
            continue
        if _robots_tokens(_attr(meta, "content") or "") & OPT_OUT_ROBOTS_TOKENS:
            return True
    return False


def extract_page(body: bytes, page_url: str, content_type: str | None = None, x_robots_tag: str | None = None) -> Page:
    """Decode ``body`` and list one :class:`ImageCandidate` per ``<img>`` with a usable http(s) URL.

    ``x_robots_tag``: the response's ``X-Robots-Tag`` header; ``noai`` / ``noimageai`` there or in a robots
    ``<meta>`` set ``opt_out`` (``opt_out_source``: ``header`` or ``meta``)."""
    text, charset, charset_source = decode_html(body, content_type)
    tree = LexborHTMLParser(text)
    html_node = tree.css_first("html")
    lang = (_attr(html_node, "lang") or "").strip().lower().replace("_", "-") if html_node else ""
    og_node = tree.css_first('meta[property="og:locale"]')
    og_locale = (_attr(og_node, "content") or "").strip() if og_node else ""
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        base = _resolve(page_url, _attr(base_node, "href")) or page_url
    page = Page(
        page_url=page_url,
        domain=_host(page_url),
        charset=charset,
        charset_source=charset_source,
        html_lang=lang or None,
        og_locale=og_locale or None,
        title=_text(tree.css_first("title"), TITLE_MAX_CHARS),
    )
    if header_opts_out(x_robots_tag):
        page.opt_out, page.opt_out_source = True, "header"
    elif _opt_out(tree):
        page.opt_out, page.opt_out_source = True, "meta"
    for img in tree.css("img"):
        src_url = _resolve(base, _attr(img, "src"))
        url, source_attr = _choose_url(img, base, src_url)
        if url is None:
            page.skipped_urls += 1
            continue
        figure = _ancestor(img, "figure")
        page.images.append(
            ImageCandidate(
                image_url=url,
                alt_raw=_attr(img, "alt"),
                title_attr=_attr(img, "title"),
                width_attr=_int_attr(_attr(img, "width")),
                height_attr=_int_attr(_attr(img, "height")),
                source_attr=source_attr,
                context_text=_text(figure.css_first("figcaption"), CONTEXT_TEXT_MAX_CHARS) if figure else None,
                src_url=src_url,
            )
        )
    return page


# -- table ---------------------------------------------------------------------------------------------------
IMAGE_CANDIDATE_STRUCT = pl.Struct(
    {
        "image_url": pl.String,
        "alt_raw": pl.String,
        "title_attr": pl.String,
        "width_attr": pl.Int64,
        "height_attr": pl.Int64,
        "source_attr": pl.String,
        "context_text": pl.String,
        "src_url": pl.String,
    }
)
RAW_CRAWL_SCHEMA = pl.Schema(
    {
        "warc_uri": pl.String,
        "record_offset": pl.Int64,
        "page_url": pl.String,
        "domain": pl.String,
        "http_status": pl.Int64,
        "charset": pl.String,
        "html_lang": pl.String,
        "og_locale": pl.String,
        "title": pl.String,
        "fetch_date": pl.String,
        "opt_out": pl.Boolean,
        "opt_out_source": pl.String,
        "charset_source": pl.String,
        "images": pl.List(IMAGE_CANDIDATE_STRUCT),
    }
)


def pages_to_frame(pages: Iterable[tuple[HtmlResponse, Page]]) -> pl.DataFrame:
    """One row per page with :data:`RAW_CRAWL_SCHEMA` (also when there are no pages)."""
    rows = [
        {
            "warc_uri": response.warc_uri,
            "record_offset": response.record_offset,
            "page_url": page.page_url,
            "domain": page.domain,
            "http_status": response.http_status,
            "charset": page.charset,
            "html_lang": page.html_lang,
            "og_locale": page.og_locale,
            "title": page.title,
            "fetch_date": response.fetch_date,
            "opt_out": page.opt_out,
            "opt_out_source": page.opt_out_source,
            "charset_source": page.charset_source,
            "images": [
                {
                    "image_url": image.image_url,
                    "alt_raw": image.alt_raw,
                    "title_attr": image.title_attr,
                    "width_attr": image.width_attr,
                    "height_attr": image.height_attr,
                    "source_attr": image.source_attr,
                    "context_text": image.context_text,
                    "src_url": image.src_url,
                }
                for image in page.images
            ],
        }
        for response, page in pages
    ]
    return pl.DataFrame(rows, schema=RAW_CRAWL_SCHEMA) if rows else RAW_CRAWL_SCHEMA.to_frame()


def extract_warc(path: str | Path, stats: WarcStats | None = None) -> pl.DataFrame:
    """Every HTML page of one WARC file as :data:`RAW_CRAWL_SCHEMA` rows; skipped records counted in ``stats``.

    A page whose HTML cannot be parsed at all is counted as ``stats.malformed`` and skipped, never raised."""
    stats = stats if stats is not None else WarcStats()
    pages = []
    for response in iter_html_responses(path, stats):
        try:
            page = extract_page(response.body, response.page_url, response.content_type, response.x_robots_tag)
        except (ValueError, TypeError, RuntimeError, UnicodeError):
            stats.malformed += 1
            continue
        pages.append((response, page))
    return pages_to_frame(pages)
