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
