"""Decode an HTML page and list its ``<img>`` candidates (the unfiltered input of ``raw_crawl``).

Charset order (recorded in :attr:`Page.charset_source`): HTTP header > BOM > ``<meta charset>`` /
``http-equiv`` > detection (strict UTF-8, then charset_normalizer) > UTF-8 with replacement characters.

Context of an image (``context_text``, its origin in ``context_source``): the ``<figcaption>`` of the nearest
``<figure>`` (``"figcaption"``, up to :data:`CONTEXT_TEXT_MAX_CHARS`), else null. With ``nearby_context=True``
(opt-in: it costs about 30 % of extraction speed) an image without a caption takes the text around it instead
(``"nearby"``, up to :data:`NEARBY_TEXT_MAX_CHARS`, cut between words; see :func:`_nearby_text`), else null.

Speed (``benchmarks/bench_extraction.py``): lexbor is fed UTF-8 bytes (a page already in valid UTF-8 is not decoded
to ``str`` and back), elements are found with ``tags()`` (a tag-name walk, ~10x cheaper than a CSS query), URLs go
through :class:`UrlResolver` (urljoin's exact result without urljoin for the common shapes), and
:func:`extract_warc` builds the table column by column instead of from one dict per image.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urldefrag, urljoin, urlsplit

import charset_normalizer
import polars as pl
import pyarrow as pa
from selectolax.lexbor import LexborHTMLParser, LexborNode

from mella_assets.crawl.warc import WarcStats, iter_html_responses

if TYPE_CHECKING:
    from pathlib import Path

    from mella_assets.crawl.warc import HtmlResponse

CONTEXT_TEXT_MAX_CHARS = 300
# Nearby text (the fallback context of an image without a <figcaption>): at most this many characters, cut at the
# last space that fits (a single longer word is cut at the bound).
NEARBY_TEXT_MAX_CHARS = 200
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
_ABSENT = object()


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
    context_source: str | None = None  # where context_text came from: "figcaption", "nearby" or None (no text)


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


@functools.lru_cache(maxsize=256)
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


def _declared_charset(body: bytes, content_type: str | None) -> tuple[str | None, str, int]:
    """``(codec, charset_source, bytes to skip)`` from the header, a BOM or ``<meta>``; codec None if undeclared."""
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        name = _codec_name(match.group(1)) if match else None
        if name:
            return name, "http_header", 0
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, "bom", len(bom)
    match = _META_CHARSET.search(body[:_META_SNIFF_BYTES])
    name = _codec_name(match.group(1)) if match else None
    if name and name.startswith("utf-16"):
        # A page whose <meta> can be read as ASCII is not UTF-16 (HTML spec rule).
        name = "utf-8"
    if name:
        return name, "meta", 0
    return None, "detected", 0


def _detect(body: bytes) -> tuple[str, str, str]:
    """Decode an undeclared page: strict UTF-8, else charset_normalizer's guess, else UTF-8 with replacements."""
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body).best()
    name = _codec_name(best.encoding) if best is not None else None
    if name:
        return body.decode(name, errors="replace"), name, "detected"
    return body.decode("utf-8", errors="replace"), "utf-8", "fallback"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Decode a page; returns ``(text, charset, charset_source)``."""
    name, source, skip = _declared_charset(body, content_type)
    if name is None:
        return _detect(body)
    return body[skip:].decode(name, errors="replace"), name, source


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_for_parser(body: bytes, content_type: str | None) -> tuple[bytes, str, str]:
    """:func:`decode_html`'s text as the UTF-8 bytes lexbor parses, ``(html, charset, charset_source)``.

    UTF-8 is passed through as it is: decoding to ``str`` only for selectolax to encode it back costs about half
    as much as the parse itself."""
    name, source, skip = _declared_charset(body, content_type)
    if name is None:
        if _is_utf8(body):
            return body, "utf-8", "detected"
        text, name, source = _detect(body)
    else:
        payload = body[skip:] if skip else body
        if name == "utf-8":
            # lexbor replaces invalid UTF-8 with U+FFFD exactly as errors="replace" does (tested).
            return payload, name, source
        text = payload.decode(name, errors="replace")
    # selectolax encodes a str argument exactly so.
    return text.encode("utf-8", errors="ignore"), name, source


# -- urls ------------------------------------------------------------------------------------------------------
def _resolve_by_urljoin(base: str, value: str) -> str | None:
    """The definition: ``urljoin``, fragment dropped, kept only if http(s) with a host."""
    try:
        url = urldefrag(urljoin(base, value)).url
        parts = urlsplit(url)
        if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            return None
    except ValueError:
        return None
    return url


# Characters that need no cleaning: no controls, no space or other str.isspace() characters (stripped first).
_URL_CHAR = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SEGMENT = rf"(?!\.\.?(?:/|\?|\Z)){_URL_CHAR}:?#;\\/]+"
_QUERY = rf"(?:\?{_URL_CHAR}#\\]+)?"
# The shapes of values whose urljoin result is a plain concatenation (checked against urljoin in
# tests/test_html.py): no dot or empty path segments, no ';' params, ':' or '\', no fragment, no empty '?'.
_FAST_URL = re.compile(
    rf"(?P<network>(?:https?:)?//[A-Za-z0-9_.-]+(?::[0-9]*)?(?:/{_URL_CHAR}?#;\\]*)?{_QUERY})\Z"
    rf"|(?P<root>/(?:{_SEGMENT}(?:/{_SEGMENT})*/?)?{_QUERY})\Z"
    rf"|(?P<relative>{_SEGMENT}(?:/{_SEGMENT})*/?{_QUERY})\Z"
    rf"|(?P<dotted>(?:\.\.?/)+{_SEGMENT}(?:/{_SEGMENT})*/?{_QUERY})\Z"
)
_DOT_SEGMENTS = re.compile(r"(?:\.\.?/)+")
# Schemes that are never an http(s) URL, whatever the base.
_OTHER_SCHEMES = ("data:", "javascript:", "mailto:", "about:", "blob:", "tel:")


# A base whose directory and origin can be read off as substrings (the usual page URL).
_SIMPLE_BASE = re.compile(
    rf"(https?:)//(?P<host>[A-Za-z0-9_.-]+)(?::[0-9]*)?((?:/{_SEGMENT})*/?)(?:\?[^\x00-\x20\x7f#]*)?(?:#[^\x00-\x20\x7f]*)?\Z"
)


@functools.lru_cache(maxsize=4096)
def _join_prefixes(base: str) -> tuple[str | None, str | None, str | None]:
    """``(directory, origin, scheme)`` such that urljoin(base, v) is ``directory + v`` for a relative path,
    ``origin + v`` for a root path and ``scheme + v`` for ``//host/...``; all None where that cannot be relied on."""
    simple = _SIMPLE_BASE.match(base)
    if simple:
        path = simple.group(3)
        origin = base[: simple.start(3)]
        return origin + path[: path.rfind("/") + 1] if path else origin + "/", origin, simple.group(1)
    if base.startswith(("http://", "https://")):
        in_directory, at_root = _resolve_by_urljoin(base, "x"), _resolve_by_urljoin(base, "/x")
        if in_directory and at_root and in_directory.endswith("/x") and at_root.endswith("/x"):
            return in_directory[:-1], at_root[:-2], base[: base.index(":") + 1]
    return None, None, None


class UrlResolver:
    """Resolves attribute values against one page's base URL to absolute http(s) URLs without fragment.

    Gives exactly what ``urljoin`` + ``urldefrag`` give (None for ``data:``, ``javascript:``, empty or host-less
    values), but the common shapes (``a/b.jpg``, ``/a/b.jpg``, ``//host/a.jpg``, ``https://host/a.jpg``) are
    joined as strings: urljoin was ~45 % of extraction time. Anything else goes through urljoin, cached."""

    __slots__ = ("_cache", "_prefixes", "base")

    def __init__(self, base: str) -> None:
        self.base = base
        self._cache: dict[str, str | None] = {}
        # (directory, origin, scheme): urljoin(base, v) as a concatenation, by the shape of v.
        self._prefixes = _join_prefixes(base)

    def resolve(self, raw: str | None) -> str | None:
        if raw is None:
            return None
        if (url := self._joined(raw)) is not None:
            return url
        # Browsers drop tabs and newlines inside URLs and strip surrounding whitespace.
        value = raw.replace("\t", "").replace("\n", "").replace("\r", "").strip()
        if not value or value[:11].lower().startswith(_OTHER_SCHEMES):
            return None
        if value != raw and (url := self._joined(value)) is not None:
            return url
        url = self._cache.get(value, _ABSENT)
        if url is _ABSENT:
            url = self._cache[value] = _resolve_by_urljoin(self.base, value)
        return url

    def _joined(self, value: str) -> str | None:
        """urljoin's result by concatenation where ``value`` has one of the plain shapes, else None."""
        directory, origin, scheme = self._prefixes
        if directory is None or (shape := _FAST_URL.match(value)) is None:
            return None
        kind = shape.lastgroup
        if kind == "relative":
            return directory + value
        if kind == "root":
            return origin + value
        if kind == "dotted":
            # Leading ./ and ../ segments: each ../ drops one directory, never above the root.
            run = _DOT_SEGMENTS.match(value).group()
            kept = directory[len(origin) :].split("/")[1:-1]
            kept = kept[: max(len(kept) - run.count("../"), 0)]
            return origin + "/" + "".join(segment + "/" for segment in kept) + value[len(run) :]
        return value if value[0] == "h" else scheme + value


# -- attributes ------------------------------------------------------------------------------------------------
def _is_placeholder(value: str | None) -> bool:
    if value is None or not value.strip():
        return True
    value = value.strip()
    return value.lower().startswith("data:") or bool(_PLACEHOLDER.search(value.split("?", 1)[0]))


# One srcset candidate: a URL (a run of non-spaces; a trailing comma ends the candidate), then its descriptors.
_SRCSET_CANDIDATE = re.compile(r"[\s,]*(\S+)(?:(?<=,)|([^,]*))")


@functools.lru_cache(maxsize=1024)
def _descriptor_value(descriptor: str) -> tuple[float, str]:
    value, kind = 1.0, "x"
    for token in descriptor.strip().lower().split():
        try:
            if token.endswith("w"):
                value, kind = float(token[:-1]), "w"
            elif token.endswith("x"):
                value, kind = float(token[:-1]), "x"
        except ValueError:
            continue
    return value, kind


def _parse_srcset_by_chars(srcset: str) -> list[tuple[str, float, str]]:
    """The HTML spec's srcset tokenizer, char by char: descriptors may hold commas inside parentheses."""
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
            descriptor = srcset[start:pos]
        if not url:
            continue
        candidates.append((url, *_descriptor_value(descriptor)))
    return candidates


def parse_srcset(srcset: str) -> list[tuple[str, float, str]]:
    """``(url, value, kind)`` per candidate, kind ``"w"`` or ``"x"`` (a missing descriptor means ``1x``)."""
    if "(" in srcset or ")" in srcset:
        return _parse_srcset_by_chars(srcset)
    candidates = []
    for url, descriptor in _SRCSET_CANDIDATE.findall(srcset):
        if url[-1] == ",":  # the URL ended the candidate: no descriptor
            url = url.rstrip(",")
            if not url:  # only commas were left
                continue
        candidates.append((url, *_descriptor_value(descriptor)))
    return candidates


def _largest(resolver: UrlResolver, srcsets: Iterable[str | None]) -> str | None:
    """The largest usable candidate over one or more srcset values (``w`` descriptors beat ``x``; the first of
    equals wins)."""
    ranked = [
        ((1 if kind == "w" else 0, value), raw) for srcset in srcsets for raw, value, kind in parse_srcset(srcset or "")
    ]
    if not ranked:
        return None
    # Resolving is the costly part: try the best candidate alone first, then the rest from the best down.
    best = max(ranked, key=_rank)
    if (url := resolver.resolve(best[1])) is not None:
        return url
    ranked.sort(key=_rank, reverse=True)  # stable: equals keep their order
    for _rank_key, raw in ranked:
        url = resolver.resolve(raw)
        if url is not None:
            return url
    return None


def _largest_of(resolver: UrlResolver, srcsets: list[str]) -> str | None:
    """:func:`_largest` in a single pass over the candidates (the common case: plain srcsets whose largest
    candidate resolves); anything else goes to :func:`_largest`."""
    if any("(" in srcset or ")" in srcset for srcset in srcsets):
        return _largest(resolver, srcsets)
    best_rank, best_url = None, None
    for srcset in srcsets:
        for url, descriptor in _SRCSET_CANDIDATE.findall(srcset):
            if url[-1] == ",":
                url = url.rstrip(",")
                if not url:
                    continue
            value, kind = _descriptor_value(descriptor)
            rank = (kind == "w", value)
            if best_rank is None or rank > best_rank:
                best_rank, best_url = rank, url
    if best_url is None:
        return None
    return resolver.resolve(best_url) or _largest(resolver, srcsets)


def _rank(candidate: tuple[tuple[int, float], str]) -> tuple[int, float]:
    return candidate[0]


def _int_attr(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    match = _LEADING_INT.match(value)
    return int(match.group(1)) if match else None


def _text(node: LexborNode | None, limit: int) -> str | None:
    if node is None:
        return None
    text = _WHITESPACE.sub(" ", node.text(separator=" ")).strip()
    return text[:limit] if text else None


# lexbor's numeric tag ids: comparing them is cheaper than building each node's tag name as a str.
_TAG_ID = {
    node.tag: node.tag_id
    for node in LexborHTMLParser(
        "<figure><figcaption></figcaption><picture><source><img></picture></figure>"
        "<table><caption></caption><tr><th></th><td></td></tr></table><ul><li></li></ul><dl><dt></dt><dd></dd></dl>"
        "<blockquote></blockquote><h1></h1><h2></h2><h3></h3><h4></h4><h5></h5><h6></h6>"
        "<p><a><span><b><i><em><strong><small><u><s><mark><font><label><cite><q><sub><sup><abbr><code><big>x<br>"
        "</big></code></abbr></sup></sub></q></cite></label></font></mark></s></u></small></strong></em></i></b></span>"
        "</a></p><script></script><style></style><noscript></noscript><template></template><!-- -->"
    ).root.traverse(include_text=True)
}
_TEXT_NODE = _TAG_ID["-text"]
# Nearby text: an <img> inside these (through inline elements) takes the element's whole text ...
_TEXT_BLOCKS = frozenset(
    _TAG_ID[name]
    for name in ("p", "li", "td", "th", "dd", "dt", "caption", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6")
)
# ... it climbs through at most this many of these inline elements to find its block ...
_INLINE = frozenset(
    _TAG_ID[name]
    for name in (
        *("a", "span", "picture", "b", "i", "em", "strong", "small", "u", "s", "mark", "font", "label", "cite"),
        *("q", "sub", "sup", "abbr", "code", "big"),
    )
)
_MAX_INLINE_LEVELS = 4
# ... and inside any other block (div, section, body, ...) it takes the nearest sibling text before and after it:
# a text node or a text-bearing element, found within a few steps that skip these (and blank text, comments).
_SKIPPED_SIBLINGS = frozenset(_TAG_ID[name] for name in ("script", "style", "noscript", "template", "br", "-comment"))
_MAX_SIBLING_STEPS = 4
# Text read from one element at most (from the end for text before the image), whatever its size.
_READ_CHARS = 4 * NEARBY_TEXT_MAX_CHARS
_TEXT_SIBLINGS = _TEXT_BLOCKS | (_INLINE - {_TAG_ID["picture"]})
# Never text: their contents are skipped wherever nearby text is read.
_NOT_TEXT = frozenset(_TAG_ID[name] for name in ("script", "style", "noscript", "template", "-comment"))


def _choose_url(
    attributes: dict[str, str | None], picture: LexborNode | None, resolver: UrlResolver, src_url: str | None
) -> tuple[str | None, str]:
    """(url, source_attr) the browser would end up showing, after a lazy loader swapped data-* in; ``picture``:
    the ``<picture>`` the ``<img>`` is a child of."""
    if picture is not None:
        # Every <source> inside the picture whose parent is a <picture>, in document order.
        source_id, picture_id = _TAG_ID["source"], _TAG_ID["picture"]
        srcsets = []
        for node in picture.traverse():
            if node.tag_id == source_id and node.parent is not None and node.parent.tag_id == picture_id:
                attributes_of_source = node.attributes
                srcsets.append(attributes_of_source.get("data-srcset") or attributes_of_source.get("srcset") or "")
        url = _largest_of(resolver, srcsets)
        if url:
            return url, "picture"
    data_srcset, srcset = attributes.get("data-srcset"), attributes.get("srcset")
    if data_srcset and (url := _largest_of(resolver, [data_srcset])):
        return url, "data-srcset"
    if srcset and (url := _largest_of(resolver, [srcset])):
        return url, "srcset"
    data_src = attributes.get("data-src")
    if data_src and not _is_placeholder(data_src) and (url := resolver.resolve(data_src)):
        return url, "data-src"
    return src_url, "src"


def _pictures_by_img(tree: LexborHTMLParser) -> dict[int, LexborNode]:
    """``<picture>`` elements keyed by the ``mem_id`` of their ``<img>`` children."""
    img = _TAG_ID["img"]
    return {
        child.mem_id: picture for picture in tree.tags("picture") for child in picture.iter() if child.tag_id == img
    }


def _text_node_text(node: LexborNode, texts: dict[int, str]) -> str:
    """The text of a text node, read once per page: ``texts`` (keyed by ``mem_id``) keeps what was read, as the
    paragraph between two images is read by both (decoding it from lexbor costs ~1 us per 500 characters)."""
    key = node.mem_id
    text = texts.get(key)
    if text is None:
        text = texts[key] = node.text_content or ""
    return text


def _subtree_text(node: LexborNode, budget: int, texts: dict[int, str], backward: bool = False) -> str:
    """The text nodes of ``node`` (itself included) joined by spaces, skipping :data:`_NOT_TEXT` subtrees; reading
    stops after about ``budget`` characters, from the start or (``backward``) from the end of the subtree.
    ``texts``: the page's text nodes read so far (see :func:`_text_node_text`)."""
    tag_id = node.tag_id
    if tag_id == _TEXT_NODE:
        return _text_node_text(node, texts)
    if tag_id in _NOT_TEXT:
        return ""
    first = node.last_child if backward else node.child
    if first is None:
        return ""
    if first.tag_id == _TEXT_NODE and (first.prev if backward else first.next) is None:
        return _text_node_text(first, texts)  # the common case: one text node
    parts: list[str] = []
    stack = [first]
    while stack and budget > 0:
        current = stack.pop()
        sibling = current.prev if backward else current.next
        if sibling is not None:
            stack.append(sibling)
        tag_id = current.tag_id
        if tag_id == _TEXT_NODE:
            text = current.text_content or ""
            parts.append(text)
            budget -= len(text)
        elif tag_id not in _NOT_TEXT:
            inner = current.last_child if backward else current.child
            if inner is not None:
                stack.append(inner)
    if backward:
        parts.reverse()
    return " ".join(parts)


def _head(text: str, limit: int) -> str:
    """The start of ``text``, whitespace collapsed, at most ``limit`` characters, cut after a whole word (a first
    word longer than ``limit`` is cut at ``limit``)."""
    window = text[: limit + 1]
    # A window already collapsed (its only whitespace single ASCII spaces: every other whitespace character is
    # unprintable) is cut as it is; "  " is the cheaper test, so it goes first.
    if not (window and window[0] != " " and "  " not in window and window.isprintable()):
        # A prefix of ``limit`` characters holds at most (limit + 1) // 2 words: the rest is never split.
        most = (limit + 1) // 2
        words = text.split(None, most)
        if len(words) > most:
            words[most] = ""  # the unsplit rest: never within the bound
        window = " ".join(words)[: limit + 1]
    if len(window) <= limit:
        return window.rstrip()
    cut = window.rfind(" ")
    return window[:cut] if cut > 0 else window[:limit]


def _tail(text: str, limit: int) -> str:
    """The end of ``text``, whitespace collapsed, at most ``limit`` characters, starting with a whole word (a last
    word longer than ``limit`` keeps its last ``limit`` characters)."""
    window = text[-(limit + 1) :]
    if not (window and window[-1] != " " and "  " not in window and window.isprintable()):  # as in _head
        most = (limit + 1) // 2
        words = text.rsplit(None, most)
        if len(words) > most:
            words[0] = ""
        window = " ".join(words)[-(limit + 1) :]
    if len(window) <= limit:
        return window.lstrip()
    cut = window.find(" ")
    return window[cut + 1 :] if cut >= 0 else window[1:]


def _sibling_text(node: LexborNode | None, forward: bool, texts: dict[int, str]) -> str:
    """The raw text of the first sibling of ``node`` (after it if ``forward``) that is not blank or skipped, if that
    sibling is text-bearing (:data:`_TEXT_SIBLINGS`); an image, table, list, ... in between stops the search."""
    steps = _MAX_SIBLING_STEPS
    while node is not None and steps:
        tag_id = node.tag_id
        if tag_id in _TEXT_SIBLINGS:  # the common case: a paragraph, heading or link
            first = node.child if forward else node.last_child
            if first is not None and first.tag_id == _TEXT_NODE and (first.next if forward else first.prev) is None:
                return _text_node_text(first, texts)  # _subtree_text's common case (one text node), inlined
            return _subtree_text(node, _READ_CHARS, texts, not forward)
        if tag_id == _TEXT_NODE:
            text = _text_node_text(node, texts)
            if text and not text.isspace():
                return text
        elif tag_id not in _SKIPPED_SIBLINGS:
            return ""
        node = node.next if forward else node.prev
        steps -= 1
    return ""


def _nearby_text(img: LexborNode, texts: dict[int, str]) -> str | None:
    """The text around an ``<img>`` without a caption, at most :data:`NEARBY_TEXT_MAX_CHARS` characters.

    The image climbs through up to :data:`_MAX_INLINE_LEVELS` inline elements (``a``, ``span``, ``picture``, ...).
    If it lands in a paragraph-like block (``p``, ``li``, ``td``, ``th``, ``dd``, ``dt``, ``caption``,
    ``blockquote``, ``h1``-``h6``), the context is the start of that block's text. In any other element (``div``,
    ``section``, ``body``, ...) it is the end of the nearest text before the image (or the inline element holding
    it) and the start of the text after it (that inline element's own text, then the nearest text after it), each
    side given half the bound and what the other side leaves unused.
    Whitespace is collapsed and cuts fall between words. Script, style, noscript and template text never counts,
    nor does any attribute (so not the alt). ``texts``: the page's text nodes read so far, shared by its images."""
    branch, block = img, img.parent
    for _level in range(_MAX_INLINE_LEVELS):
        if block is None or block.tag_id not in _INLINE:
            break
        branch, block = block, block.parent
    if block is None:
        return None
    limit = NEARBY_TEXT_MAX_CHARS
    if block.tag_id in _TEXT_BLOCKS:
        return _head(_subtree_text(block, _READ_CHARS, texts), limit) or None
    before = _sibling_text(branch.prev, False, texts)
    after = _sibling_text(branch.next, True, texts)
    if branch is not img and (inside := _subtree_text(branch, _READ_CHARS, texts)):
        after = f"{inside} {after}"  # the text of the link, span, ... holding the image counts as after it
    if not before:
        return _head(after, limit) or None
    if not after:
        return _tail(before, limit) or None
    # Each side gets half the bound, and what the other side leaves unused.
    shown_before = _tail(before, limit // 2)
    shown_after = _head(after, limit - 1 - len(shown_before) if shown_before else limit)
    if len(shown_after) < limit // 2 and len(before) > len(shown_before):
        shown_before = _tail(before, limit - 1 - len(shown_after) if shown_after else limit)
    return " ".join(part for part in (shown_before, shown_after) if part) or None


def _captions_by_img(tree: LexborHTMLParser) -> dict[int, str | None]:
    """The caption of the nearest ``<figure>`` around each ``<img>`` (keyed by ``mem_id``): the text of the figure's
    first ``<figcaption>``. Figures come in document order, so an inner figure overrides an outer one."""
    img, figcaption = _TAG_ID["img"], _TAG_ID["figcaption"]
    captions: dict[int, str | None] = {}
    for figure in tree.tags("figure"):
        caption_node, images = None, []
        for node in figure.traverse():
            tag_id = node.tag_id
            if tag_id == img:
                images.append(node.mem_id)
            elif tag_id == figcaption and caption_node is None:
                caption_node = node
        if images:
            captions.update(dict.fromkeys(images, _text(caption_node, CONTEXT_TEXT_MAX_CHARS)))
    return captions


# -- page ----------------------------------------------------------------------------------------------------
def _host(url: str) -> str:
    if simple := _SIMPLE_BASE.match(url):
        return simple.group("host").lower()
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


def _meta_opts_out(metas: list[dict[str, str | None]]) -> bool:
    for attributes in metas:
        if (attributes.get("name") or "").strip().lower() not in {"robots", "mella"}:
            continue
        if _robots_tokens(attributes.get("content") or "") & OPT_OUT_ROBOTS_TOKENS:
            return True
    return False


# One image candidate as a row, in ImageCandidate's field order (the table is built from these, not from objects).
ImageRow = tuple[str, str | None, str | None, int | None, int | None, str, str | None, str | None, str | None]


def _extract_rows(
    body: bytes, page_url: str, content_type: str | None, x_robots_tag: str | None, *, nearby_context: bool = False
) -> tuple[Page, list[ImageRow]]:
    """The page (``images`` left empty) and its image candidates as :data:`ImageRow` tuples; nearby text is
    looked for only with ``nearby_context``."""
    html, charset, charset_source = _utf8_for_parser(body, content_type)
    tree = LexborHTMLParser(html)
    # tags() walks the tree by tag name; lexbor always builds one <html> root.
    root = tree.root
    lang = ((root.attributes.get("lang") or "").strip().lower().replace("_", "-")) if root is not None else ""
    metas = [meta.attributes for meta in tree.tags("meta")]
    og_locale = ""
    for attributes in metas:
        if attributes.get("property", _ABSENT) == "og:locale":
            og_locale = (attributes.get("content") or "").strip()
            break
    base = page_url
    for base_node in tree.tags("base"):
        attributes = base_node.attributes
        if "href" in attributes:
            base = UrlResolver(page_url).resolve(attributes["href"] or "") or page_url
            break
    titles = tree.tags("title")
    page = Page(
        page_url=page_url,
        domain=_host(page_url),
        charset=charset,
        charset_source=charset_source,
        html_lang=lang or None,
        og_locale=og_locale or None,
        title=_text(titles[0], TITLE_MAX_CHARS) if titles else None,
    )
    if header_opts_out(x_robots_tag):
        page.opt_out, page.opt_out_source = True, "header"
    elif _meta_opts_out(metas):
        page.opt_out, page.opt_out_source = True, "meta"
    resolver = UrlResolver(base)
    pictures, captions = _pictures_by_img(tree), _captions_by_img(tree)
    rows: list[ImageRow] = []
    texts: dict[int, str] = {}  # text nodes read for nearby text, by mem_id
    for img in tree.tags("img"):
        attributes = img.attributes
        get = attributes.get
        src = get("src", _ABSENT)
        src_url = resolver.resolve(src or "") if src is not _ABSENT else None
        key = img.mem_id if pictures or captions else None
        picture = pictures.get(key) if pictures else None
        if picture is None and not (get("data-srcset") or get("srcset") or get("data-src")):
            url, source_attr = src_url, "src"
        else:
            url, source_attr = _choose_url(attributes, picture, resolver, src_url)
        if url is None:
            page.skipped_urls += 1
            continue
        # An attribute present without a value reads as "" (HTML semantics), an absent one as None.
        alt, title = get("alt", _ABSENT), get("title", _ABSENT)
        context = captions.get(key) if captions else None
        if context is not None:
            context_source = "figcaption"
        elif nearby_context and (context := _nearby_text(img, texts)) is not None:
            context_source = "nearby"
        else:
            context_source = None
        rows.append(
            (
                url,
                None if alt is _ABSENT else alt or "",
                None if title is _ABSENT else title or "",
                _int_attr(get("width")),
                _int_attr(get("height")),
                source_attr,
                context,
                src_url,
                context_source,
            )
        )
    return page, rows


def extract_page(
    body: bytes,
    page_url: str,
    content_type: str | None = None,
    x_robots_tag: str | None = None,
    *,
    nearby_context: bool = False,
) -> Page:
    """Decode ``body`` and list one :class:`ImageCandidate` per ``<img>`` with a usable http(s) URL.

    ``x_robots_tag``: the response's ``X-Robots-Tag`` header; ``noai`` / ``noimageai`` there or in a robots
    ``<meta>`` set ``opt_out`` (``opt_out_source``: ``header`` or ``meta``). ``nearby_context``: an image without
    a ``<figcaption>`` takes the text around it as context (off by default: it costs about 30 % of the speed)."""
    page, rows = _extract_rows(body, page_url, content_type, x_robots_tag, nearby_context=nearby_context)
    page.images = [ImageCandidate(*row) for row in rows]
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
        "context_source": pl.String,
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


class _TableBuilder:
    """:data:`RAW_CRAWL_SCHEMA` rows gathered column by column: one list per page field, and the image rows of
    all pages flat with each page's end offset, turned into the ``images`` list column in one step."""

    def __init__(self) -> None:
        self.page_columns: dict[str, list] = {name: [] for name in RAW_CRAWL_SCHEMA.names() if name != "images"}
        self.image_rows: list[ImageRow] = []
        self.image_offsets = [0]

    def add(self, response: HtmlResponse, page: Page, image_rows: list[ImageRow]) -> None:
        values = (
            response.warc_uri,
            response.record_offset,
            page.page_url,
            page.domain,
            response.http_status,
            page.charset,
            page.html_lang,
            page.og_locale,
            page.title,
            response.fetch_date,
            page.opt_out,
            page.opt_out_source,
            page.charset_source,
        )
        for column, value in zip(self.page_columns.values(), values, strict=True):
            column.append(value)
        self.image_rows.extend(image_rows)
        self.image_offsets.append(len(self.image_rows))

    def frame(self) -> pl.DataFrame:
        image_columns = list(zip(*self.image_rows, strict=True)) or [()] * len(IMAGE_CANDIDATE_STRUCT.fields)
        images = pl.DataFrame(
            {
                image_field.name: pl.Series(image_field.name, values, dtype=image_field.dtype)
                for image_field, values in zip(IMAGE_CANDIDATE_STRUCT.fields, image_columns, strict=True)
            }
        ).to_struct("images")
        image_lists = pa.ListArray.from_arrays(pa.array(self.image_offsets, pa.int64()), images.to_arrow())
        columns = {
            name: pl.Series(name, values, dtype=RAW_CRAWL_SCHEMA[name]) for name, values in self.page_columns.items()
        }
        columns["images"] = pl.Series("images", image_lists).cast(RAW_CRAWL_SCHEMA["images"])
        return pl.DataFrame(columns, schema=RAW_CRAWL_SCHEMA)


def pages_to_frame(pages: Iterable[tuple[HtmlResponse, Page]]) -> pl.DataFrame:
    """One row per page with :data:`RAW_CRAWL_SCHEMA` (also when there are no pages)."""
    table = _TableBuilder()
    for response, page in pages:
        table.add(response, page, [tuple(vars(image).values()) for image in page.images])
    return table.frame()


def extract_warc(path: str | Path, stats: WarcStats | None = None, *, nearby_context: bool = False) -> pl.DataFrame:
    """Every HTML page of one WARC file as :data:`RAW_CRAWL_SCHEMA` rows; skipped records counted in ``stats``.

    A page whose HTML cannot be parsed at all is counted as ``stats.malformed`` and skipped, never raised.
    ``nearby_context``: as in :func:`extract_page`."""
    stats = stats if stats is not None else WarcStats()
    table = _TableBuilder()
    for response in iter_html_responses(path, stats):
        try:
            page, image_rows = _extract_rows(
                response.body,
                response.page_url,
                response.content_type,
                response.x_robots_tag,
                nearby_context=nearby_context,
            )
        except (ValueError, TypeError, RuntimeError, UnicodeError):
            stats.malformed += 1
            continue
        table.add(response, page, image_rows)
    return table.frame()
