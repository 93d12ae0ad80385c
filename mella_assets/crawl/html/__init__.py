"""Decode an HTML page and list its ``<img>`` candidates (the unfiltered input of ``raw_crawl``).

Charset order (recorded in ``Page.charset_source``; :mod:`.charset`): HTTP header > BOM > ``<meta charset>`` /
``http-equiv`` > detection (strict UTF-8, then charset_normalizer) > UTF-8 with replacement characters.

Context of an image (``context_text``, its origin in ``context_source``; :mod:`.context`): the ``<figcaption>`` of
the nearest ``<figure>`` (``"figcaption"``, up to ``CONTEXT_TEXT_MAX_CHARS``), else null. With
``nearby_context=True`` (opt-in: it costs about 30 % of extraction speed) an image without a caption takes the text
around it instead (``"nearby"``, up to :data:`NEARBY_TEXT_MAX_CHARS`, cut between words; see
``context._nearby_text``), else null.

Speed (``benchmarks/bench_extraction.py``): lexbor is fed UTF-8 bytes (a page already in valid UTF-8 is not decoded
to ``str`` and back), elements are found with ``tags()`` (a tag-name walk, ~10x cheaper than a CSS query), URLs go
through :class:`UrlResolver` (:mod:`.urls`: urljoin's exact result without urljoin for the common shapes), and
:func:`extract_warc` (:mod:`.extract`) builds the table column by column instead of from one dict per image.

Modules, each importing only those listed before it: :mod:`.charset`, :mod:`.urls`, :mod:`.srcset` (srcset
parsing), :mod:`.context` (figcaption and nearby text), :mod:`.extract` (pages, image candidates, the table).
"""

from mella_assets.crawl.html.charset import decode_html
from mella_assets.crawl.html.context import NEARBY_TEXT_MAX_CHARS, _head, _tail
from mella_assets.crawl.html.extract import RAW_CRAWL_SCHEMA, ImageCandidate, extract_page, extract_warc, pages_to_frame
from mella_assets.crawl.html.srcset import _parse_srcset_by_chars, parse_srcset
from mella_assets.crawl.html.urls import UrlResolver

# What other code imports from mella_assets.crawl.html (the private names: tests/test_html.py).
__all__ = [
    "NEARBY_TEXT_MAX_CHARS",
    "RAW_CRAWL_SCHEMA",
    "ImageCandidate",
    "UrlResolver",
    "_head",
    "_parse_srcset_by_chars",
    "_tail",
    "decode_html",
    "extract_page",
    "extract_warc",
    "pages_to_frame",
    "parse_srcset",
]
