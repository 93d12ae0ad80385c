"""The ``raw_crawl`` rows: each HTML page of a WARC file with its ``<img>`` candidates, as a table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
from selectolax.lexbor import LexborHTMLParser, LexborNode

from mella_assets.crawl.html.charset import _utf8_for_parser
from mella_assets.crawl.html.context import _TAG_ID, TeaserIndex, _captions_by_img, _nearby_text, _text
from mella_assets.crawl.html.srcset import _largest_of
from mella_assets.crawl.html.urls import _ABSENT, UrlResolver, _host
from mella_assets.crawl.warc import WarcStats, iter_html_responses
from mella_assets.tables import IMAGE_CANDIDATE, RAW_CRAWL

if TYPE_CHECKING:
    from pathlib import Path

    from mella_assets.crawl.warc import HtmlResponse

TITLE_MAX_CHARS = 500
MAX_DIMENSION_DIGITS = 9
# A width/height attribute: ASCII digits, an optional fraction and "px", matched on the stripped value. (The pattern
# it replaces had two whitespace runs meeting around an optional "px": quadratic in a long run of spaces.)
_LEADING_INT = re.compile(r"([0-9]+)(?:\.[0-9]*)?\s*+(?:px)?", re.IGNORECASE)
# Lazy-loading placeholders: a real image URL sits in data-src / data-srcset instead.
_PLACEHOLDER = re.compile(
    r"(?:^|/)(?:blank|spacer|placeholder|pixel|transparent|lazy|1x1)[\w-]*\.(?:gif|png|svg)$",
    re.IGNORECASE,
)
OPT_OUT_ROBOTS_TOKENS = frozenset({"noai", "noimageai"})

# -- budgets: what one page may cost (hostile input costs a record, never a partition) ----------------------------
# A candidate URL longer than this is dropped (counted in ``Page.urls_too_long``): 2,048 characters is the usual
# practical limit of browsers, CDNs and crawlers for a URL worth fetching, and every candidate stores its resolved
# URLs, so a long ``<base href>`` or page URL times thousands of short ``src`` values would otherwise reach GBs.
MAX_IMAGE_URL_CHARS = 2048
# A page whose own URL (or ``<base href>``, resolved) is longer than this is rejected (``url_too_long``): every
# candidate carries the page URL downstream, and relative URLs resolve against it.
MAX_PAGE_URL_CHARS = 4096
# Candidates kept per page; the rest are dropped and counted (``Page.candidates_over_budget``). A gallery page
# holds a few hundred images.
MAX_PAGE_CANDIDATES = 2000
# A page with more tags than this ("<" counted before parsing), or nested deeper than this (estimated from its tags
# before parsing), is rejected (``page_too_complex``) without being parsed: the parser's time grows with the square
# of the nesting depth (0.7 s at 20,000 levels, minutes at 100,000), and real pages nest a few hundred deep at most.
MAX_PAGE_ELEMENTS = 1_000_000  # lexbor holds ~200 bytes per node: ~200 MB at most
MAX_PAGE_DEPTH = 16_384  # parsing at this depth: ~0.5 s, the most one page may cost
# Tags for the depth estimate; void elements and those whose end tag is usually omitted never count as open.
_TAG = re.compile(rb"<(/?)([a-z][a-z0-9]*)")
_NOT_NESTING = frozenset(
    b"area base br col embed hr img input link meta param source track wbr "
    b"p li dt dd tr td th thead tbody tfoot colgroup option optgroup rt rp".split()
)


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
    # What tells a caption, a reused headline and a description apart (context.TeaserIndex); looked for only
    # for an image with a non-blank alt.
    link_text: str | None = None  # the text of the link the image sits in
    nearby_heading: str | None = None  # the first <h1>-<h4> beside the image in its card
    caption_markup: str | None = None  # "figcaption", "class" or "itemprop": the image has a photo caption


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
    site_name: str | None = None  # og:site_name: the site's own name, evidence that an alt text is its logo
    opt_out: bool = False
    opt_out_source: str | None = None
    images: list[ImageCandidate] = field(default_factory=list)
    skipped_urls: int = 0
    # Why the page yields no candidates although it may have images (``page_too_complex``, ``url_too_long``).
    reject_reason: str | None = None
    urls_too_long: int = 0  # candidates dropped for a URL over MAX_IMAGE_URL_CHARS
    candidates_over_budget: int = 0  # candidates past MAX_PAGE_CANDIDATES


def _nesting_depth(body: bytes) -> int:
    """The deepest nesting of elements in ``body``, estimated from its tags as the parser would close them (an end
    tag closes its open element and all opened after it; one with no open element is ignored). Linear."""
    stack: list[bytes] = []
    open_counts: dict[bytes, int] = {}
    deepest = 0
    for close, name in _TAG.findall(body.lower()):
        if name in _NOT_NESTING:
            continue
        if close:
            if open_counts.get(name):
                while True:
                    top = stack.pop()
                    open_counts[top] -= 1
                    if top == name:
                        break
        else:
            stack.append(name)
            open_counts[name] = open_counts.get(name, 0) + 1
            deepest = max(deepest, len(stack))
    return deepest


def _too_complex(body: bytes) -> bool:
    """Whether a page is over :data:`MAX_PAGE_ELEMENTS` or :data:`MAX_PAGE_DEPTH`, judged before parsing it."""
    tags = body.count(b"<")
    return tags > MAX_PAGE_ELEMENTS or (tags > MAX_PAGE_DEPTH and _nesting_depth(body) > MAX_PAGE_DEPTH)


def _is_placeholder(value: str | None) -> bool:
    if value is None or not value.strip():
        return True
    value = value.strip()
    return value.lower().startswith("data:") or bool(_PLACEHOLDER.search(value.split("?", 1)[0]))


def _int_attr(value: str | None) -> int | None:
    """A width/height attribute as pixels, or None: not a number, or more than :data:`MAX_DIMENSION_DIGITS` digits
    (no image is that large, and the column is a 64-bit integer)."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        match = _LEADING_INT.fullmatch(value.strip())
        if match is None:
            return None
        value = match.group(1)
    value = value.lstrip("0") or "0"
    return int(value) if len(value) <= MAX_DIMENSION_DIGITS else None


def _choose_url(
    attributes: dict[str, str | None], picture: LexborNode | None, resolver: UrlResolver, src_url: str | None
) -> tuple[str | None, str]:
    """(url, source_attr) the browser would end up showing, after a lazy loader swapped data-* in; ``picture``:
    the ``<picture>`` the ``<img>`` is a child of."""
    if picture is not None:
        url = _largest_of(resolver, _picture_srcsets(picture))
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


# Nodes of a <picture> looked at for its <source> elements: a real one holds a handful. The walk is bounded so that
# nested pictures (each <img> inside all the pictures after it) stay linear instead of quadratic.
_MAX_PICTURE_NODES = 256


def _picture_srcsets(picture: LexborNode) -> list[str]:
    """The srcsets of the ``<source>`` elements inside ``picture`` whose parent is a ``<picture>``, in document
    order, among its first :data:`_MAX_PICTURE_NODES` nodes."""
    source_id, picture_id = _TAG_ID["source"], _TAG_ID["picture"]
    srcsets = []
    for seen, node in enumerate(picture.traverse()):
        if seen >= _MAX_PICTURE_NODES:
            break
        if node.tag_id == source_id and node.parent is not None and node.parent.tag_id == picture_id:
            attributes_of_source = node.attributes
            srcsets.append(attributes_of_source.get("data-srcset") or attributes_of_source.get("srcset") or "")
    return srcsets


def _pictures_by_img(tree: LexborHTMLParser) -> dict[int, LexborNode]:
    """``<picture>`` elements keyed by the ``mem_id`` of their ``<img>`` children."""
    img = _TAG_ID["img"]
    return {
        child.mem_id: picture for picture in tree.tags("picture") for child in picture.iter() if child.tag_id == img
    }


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
ImageRow = tuple[
    str, str | None, str | None, int | None, int | None, str, str | None, str | None, str | None,
    str | None, str | None, str | None,
]  # fmt: skip


def _extract_rows(
    body: bytes, page_url: str, content_type: str | None, x_robots_tag: str | None, *, nearby_context: bool = False
) -> tuple[Page, list[ImageRow]]:
    """The page (``images`` left empty) and its image candidates as :data:`ImageRow` tuples; nearby text is
    looked for only with ``nearby_context``. A page over a budget (module constants above) comes back with its
    ``reject_reason`` set and no candidates; candidates over a budget are counted on the page, never raised."""
    if len(page_url) > MAX_PAGE_URL_CHARS or _too_complex(body):
        reason = "url_too_long" if len(page_url) > MAX_PAGE_URL_CHARS else "page_too_complex"
        page = Page(
            page_url=page_url[:MAX_PAGE_URL_CHARS],
            domain="",
            charset="",
            charset_source="",
            html_lang=None,
            og_locale=None,
            title=None,
            reject_reason=reason,
        )
        return page, []
    html, charset, charset_source = _utf8_for_parser(body, content_type)
    tree = LexborHTMLParser(html)
    # tags() walks the tree by tag name; lexbor always builds one <html> root.
    root = tree.root
    lang = ((root.attributes.get("lang") or "").strip().lower().replace("_", "-")) if root is not None else ""
    metas = [meta.attributes for meta in tree.tags("meta")]
    og_locale, site_name = "", ""
    for attributes in metas:
        prop = attributes.get("property", _ABSENT)
        if prop == "og:locale" and not og_locale:
            og_locale = (attributes.get("content") or "").strip()
        elif prop == "og:site_name" and not site_name:
            site_name = " ".join((attributes.get("content") or "")[:TITLE_MAX_CHARS].split())
    base = page_url
    for base_node in tree.tags("base"):
        attributes = base_node.attributes
        if "href" in attributes:
            href = attributes["href"] or ""
            base = (UrlResolver(page_url).resolve(href) if len(href) <= MAX_PAGE_URL_CHARS else None) or page_url
            if len(href) > MAX_PAGE_URL_CHARS or len(base) > MAX_PAGE_URL_CHARS:
                base = ""
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
        site_name=site_name or None,
    )
    if header_opts_out(x_robots_tag):
        page.opt_out, page.opt_out_source = True, "header"
    elif _meta_opts_out(metas):
        page.opt_out, page.opt_out_source = True, "meta"
    if not base:
        page.reject_reason = "url_too_long"
        return page, []
    resolver = UrlResolver(base)
    images = tree.tags("img")
    pictures, captions = _pictures_by_img(tree), _captions_by_img(tree, images)
    rows: list[ImageRow] = []
    texts: dict[int, str] = {}  # text nodes read for nearby text and teaser evidence, by mem_id
    teasers: TeaserIndex | None = None  # built for the first image with an alt text
    for img in images:
        if len(rows) >= MAX_PAGE_CANDIDATES:
            page.candidates_over_budget += 1
            continue
        attributes = img.attributes
        get = attributes.get
        src = get("src", _ABSENT)
        # A value over the budget is not resolved: the result would be longer still.
        src_too_long = src is not _ABSENT and len(src or "") > MAX_IMAGE_URL_CHARS
        src_url = resolver.resolve(src or "") if src is not _ABSENT and not src_too_long else None
        key = img.mem_id if pictures or captions else None
        picture = pictures.get(key) if pictures else None
        if picture is None and not (get("data-srcset") or get("srcset") or get("data-src")):
            url, source_attr = src_url, "src"
        else:
            url, source_attr = _choose_url(attributes, picture, resolver, src_url)
        if url is None or len(url) > MAX_IMAGE_URL_CHARS:
            if url is None and not (src_too_long and source_attr == "src"):
                page.skipped_urls += 1
            else:
                page.urls_too_long += 1
            continue
        if src_url is not None and len(src_url) > MAX_IMAGE_URL_CHARS:
            src_url = None  # the chosen URL is within the budget; its plain src is not kept
        # An attribute present without a value reads as "" (HTML semantics), an absent one as None.
        alt, title = get("alt", _ABSENT), get("title", _ABSENT)
        context = captions.get(key) if captions else None
        if context is not None:
            context_source = "figcaption"
        elif nearby_context and (context := _nearby_text(img, texts)) is not None:
            context_source = "nearby"
        else:
            context_source = None
        # Only an alt text is ever judged a caption, headline or description: the rest need no evidence.
        if alt is not _ABSENT and alt and not alt.isspace():
            teasers = teasers or TeaserIndex(tree, texts)
            evidence = teasers.evidence(img, context_source == "figcaption")
        else:
            evidence = (None, None, None)
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
                *evidence,
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
IMAGE_CANDIDATE_STRUCT = IMAGE_CANDIDATE
# raw_crawl's declared columns but `language`, which the asset adds.
RAW_CRAWL_SCHEMA = pl.Schema({name: dtype for name, dtype in RAW_CRAWL.columns.items() if name != "language"})


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
            page.site_name,
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

    A page whose HTML cannot be parsed at all is counted as ``stats.malformed`` and skipped, never raised; a page
    over a budget is counted by its reason (``pages_too_complex``, ``pages_url_too_long``) and skipped, and
    candidates over a budget are counted (``candidates_url_too_long``, ``candidates_over_budget``).
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
        stats.candidates_url_too_long += page.urls_too_long
        stats.candidates_over_budget += page.candidates_over_budget
        if page.reject_reason is not None:
            # Counted by reason (raw_crawl's materialization metadata); the page has no row.
            if page.reject_reason == "url_too_long":
                stats.pages_url_too_long += 1
            else:
                stats.pages_too_complex += 1
            continue
        table.add(response, page, image_rows)
    return table.frame()
