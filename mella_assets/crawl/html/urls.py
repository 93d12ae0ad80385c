"""Resolve attribute values against a page URL to absolute http(s) URLs: urljoin's result, mostly without urljoin."""

from __future__ import annotations

import functools
import re
from urllib.parse import urldefrag, urljoin, urlsplit

_ABSENT = object()


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


def _host(url: str) -> str:
    if simple := _SIMPLE_BASE.match(url):
        return simple.group("host").lower()
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
