"""The context text of an image: its ``<figcaption>``, or (opt-in) the text around it in the page."""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

CONTEXT_TEXT_MAX_CHARS = 300
# Nearby text (the fallback context of an image without a <figcaption>): at most this many characters, cut at the
# last space that fits (a single longer word is cut at the bound).
NEARBY_TEXT_MAX_CHARS = 200
_WHITESPACE = re.compile(r"\s+")


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
        "<blockquote></blockquote><article></article><section></section><main></main>"
        "<h1></h1><h2></h2><h3></h3><h4></h4><h5></h5><h6></h6>"
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


def _captions_by_img(tree: LexborHTMLParser, images: list[LexborNode]) -> dict[int, str | None]:
    """The caption of the nearest ``<figure>`` around each of ``images`` (keyed by ``mem_id``): the text of the
    figure's first ``<figcaption>`` (in document order, nested figures' included), an inner figure overriding an
    outer one.

    Linear in the size of the page, whatever its nesting: each node is climbed through once. (Walking each figure's
    whole subtree cost 21 s on 20,000 nested figures.)"""
    figures = tree.tags("figure")
    if not figures:
        return {}
    figure = _TAG_ID["figure"]
    # The first figcaption of each figure: figcaptions come in document order, and each climbs to the root through
    # figures not yet captioned, stopping where an earlier figcaption climbed (everything above is captioned).
    caption_of: dict[int, LexborNode] = {}
    climbed: set[int] = set()
    for caption in tree.tags("figcaption"):
        node = caption.parent
        while node is not None and (key := node.mem_id) not in climbed:
            climbed.add(key)
            if node.tag_id == figure:
                caption_of.setdefault(key, caption)
            node = node.parent
    # The nearest figure of each node, remembered along each climb (None: no figure above).
    nearest: dict[int, int | None] = {}
    captions: dict[int, str | None] = {}
    texts: dict[int, str | None] = {}
    for img in images:
        path, node, found = [], img.parent, None
        while node is not None:
            key = node.mem_id
            if key in nearest:
                found = nearest[key]
                break
            if node.tag_id == figure:
                found = key
                nearest[key] = key
                break
            path.append(key)
            node = node.parent
        for key in path:
            nearest[key] = found
        if found is None:
            continue
        if found not in texts:
            texts[found] = _text(caption_of.get(found), CONTEXT_TEXT_MAX_CHARS)
        captions[img.mem_id] = texts[found]
    return captions


# -- teaser evidence: what tells a photo caption, a headline reused as alt text and a description apart -----------
# Where a card ends: an element whose siblings are other cards (a teaser list's items, a page's articles). The
# page's top level is never a card: everything is beside everything there.
_CARDS = frozenset(_TAG_ID[name] for name in ("article", "li", "figure", "section", "main", "td"))
_PAGE_LEVELS = frozenset(_TAG_ID[name] for name in ("body", "html"))
_ANCHOR = _TAG_ID["a"]
# A heading or caption is beside an image when both lie under one ancestor at most this many levels above each
# and at or below the first card above each.
_MAX_CARD_LEVELS = 4
# Nodes of its card read for a link to the same href as an image link without text (a teaser's image link and its
# title link): a card holds a few dozen. Bounded, so that a huge container costs each image the same.
_MAX_SCOPE_NODES = 64
# Most characters of a link text or heading kept (a headline is a line, not a paragraph).
EVIDENCE_TEXT_MAX_CHARS = CONTEXT_TEXT_MAX_CHARS
_HEADINGS = frozenset(_TAG_ID[name] for name in ("h1", "h2", "h3", "h4"))
# Headings and caption markup: lexbor's selector engine finds both in one pass over the page, in document order
# (far cheaper than a walk in Python).
_EVIDENCE_SELECTOR = 'h1, h2, h3, h4, [class*="caption" i], [itemprop="caption" i]'


def _card_ancestors(node: LexborNode) -> list[LexborNode]:
    """The ancestors of ``node`` within its card: at most :data:`_MAX_CARD_LEVELS`, nearest first, up to and
    including the first card, never the page's top level."""
    ancestors = []
    parent = node.parent
    while parent is not None and len(ancestors) < _MAX_CARD_LEVELS and parent.tag_id not in _PAGE_LEVELS:
        ancestors.append(parent)
        if parent.tag_id in _CARDS:
            break
        parent = parent.parent
    return ancestors


class TeaserIndex:
    """The headings, photo-caption markup and links of one page, indexed so that each image finds those beside it
    in a few dictionary lookups (:meth:`evidence`).

    Linear in the size of the page whatever its shape: every heading and caption climbs at most
    :data:`_MAX_CARD_LEVELS` ancestors once, every image as many, and element texts are read once each."""

    def __init__(self, tree: LexborHTMLParser, texts: dict[int, str]) -> None:
        self._tree, self._texts = tree, texts
        self._element_texts: dict[int, str | None] = {}
        # ancestor mem_id -> the first heading under it (document order) / the caption markup under it
        self._headings: dict[int, LexborNode] = {}
        self._captions: dict[int, str] = {}
        for element in tree.css(_EVIDENCE_SELECTOR):
            if element.tag_id in _HEADINGS:
                for ancestor in _card_ancestors(element):
                    self._headings.setdefault(ancestor.mem_id, element)
                continue  # a heading is never a caption, whatever its class
            markup = "class" if "caption" in (element.attributes.get("class") or "").lower() else "itemprop"
            if self._text_of(element):
                for ancestor in _card_ancestors(element):
                    self._captions.setdefault(ancestor.mem_id, markup)

    def _text_of(self, node: LexborNode) -> str | None:
        """The start of an element's text (at most :data:`EVIDENCE_TEXT_MAX_CHARS`, whole words), read once."""
        key = node.mem_id
        if key not in self._element_texts:
            text = _head(_subtree_text(node, _READ_CHARS, self._texts), EVIDENCE_TEXT_MAX_CHARS)
            self._element_texts[key] = text or None
        return self._element_texts[key]

    def _same_href_text(self, link: LexborNode, href: str, scope: LexborNode) -> str | None:
        """The text of the first other link to ``href`` among the first :data:`_MAX_SCOPE_NODES` nodes of
        ``scope`` (the image's card, or its top ancestor within :data:`_MAX_CARD_LEVELS`)."""
        for seen, node in enumerate(scope.traverse()):
            if seen >= _MAX_SCOPE_NODES:
                break
            if (
                node.tag_id == _ANCHOR
                and node.mem_id != link.mem_id
                and node.attributes.get("href") == href
                and (text := self._text_of(node))
            ):
                return text
        return None

    def evidence(self, img: LexborNode, captioned: bool) -> tuple[str | None, str | None, str | None]:
        """``(link_text, nearby_heading, caption_markup)`` of one ``<img>``.

        - ``link_text``: the text of the ``<a>`` the image sits in (through up to :data:`_MAX_INLINE_LEVELS`
          inline elements); where that link holds no text, the text of another link to the same ``href`` (a
          teaser's image link and its title link).
        - ``nearby_heading``: the first ``<h1>``-``<h4>`` beside the image: under its nearest ancestor (at most
          :data:`_MAX_CARD_LEVELS` up, never past its card: ``article``, ``li``, ``figure``, ``section``,
          ``main``, ``td``) that holds one within as many levels and its own card.
        - ``caption_markup``: ``"figcaption"`` when ``captioned`` (the image's figure has a non-empty
          ``<figcaption>``), else ``"class"`` / ``"itemprop"`` for a non-empty element beside the image (as for
          headings) whose class names a caption (``caption``, ``wp-caption-text``, ``photo-caption``, ...) or
          with ``itemprop="caption"``, else None."""
        headings, captions = self._headings, self._captions
        indexed = bool(headings or captions)
        link, heading, caption = None, None, "figcaption" if captioned else None
        inline = True  # still climbing through inline elements (where the image's link is)
        node, level, top = img.parent, 0, img
        # One climb serves both: the link among the inline ancestors, headings and captions among those in the card.
        while node is not None and level < _MAX_CARD_LEVELS:
            tag_id = node.tag_id
            if tag_id in _PAGE_LEVELS:
                break
            if inline:
                if tag_id == _ANCHOR:
                    link, inline = node, False
                elif tag_id not in _INLINE:
                    inline = False
            if indexed:
                key = node.mem_id
                if heading is None and key in headings:
                    heading = self._text_of(headings[key])
                if caption is None:
                    caption = captions.get(key)
                if heading is not None and caption is not None and not inline:
                    break
            top = node
            if tag_id in _CARDS:
                break
            node, level = node.parent, level + 1
        link_text = None
        if link is not None:
            link_text = self._text_of(link)
            if link_text is None and (href := link.attributes.get("href")):
                link_text = self._same_href_text(link, href, top)
        return link_text, heading, caption
