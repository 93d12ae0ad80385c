"""Parse ``srcset`` values and pick the largest candidate that resolves to a usable URL."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mella_assets.crawl.html.urls import UrlResolver

# One srcset candidate: a URL (a run of non-spaces; a trailing comma ends the candidate), then its descriptors.
# Linear: the leading separators are possessive and the URL may be empty, so the pattern matches (an empty URL,
# skipped) at the end of the value instead of failing there from every start position (with `(\S+)` a value of n
# spaces cost n² steps).
_SRCSET_CANDIDATE = re.compile(r"[\s,]*+(\S*)(?:(?<=,)|([^,]*))")


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
        if not url:  # the end of the value
            continue
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
            if not url:
                continue
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
