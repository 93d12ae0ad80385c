"""What kind of text an alt text is: a photo ``caption``, a ``headline`` reused as the alt of a teaser image, or a
``description`` (anything else), from the evidence extraction records beside each candidate (``link_text``,
``nearby_heading``, ``caption_markup``; ``crawl/html/context.py``), and the D_know mix cap on headlines.

A headline comes first: an alt text that (nearly) equals the text of the link the image sits in, or a heading
beside it in its card, is the article's title whatever markup is around it (news sites put teasers in
``<figure>`` too). Else an image with a photo caption (``<figcaption>``, ``wp-caption-text``, ``itemprop=caption``,
...) has a ``caption`` alt; else the alt is a ``description``.

Dagster-free: ``mella extract --filter`` and the know assets share it.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata

import polars as pl

KINDS: tuple[str, ...] = ("caption", "headline", "description")
# Two texts are the same headline when their word sets overlap this much (Jaccard): a 10-word title may differ in
# two words (a truncated alt, a site name appended, "Foto:" prefixed) and still count.
HEADLINE_SIMILARITY = 0.8
# Below this many words on either side, words say too little (and Thai, Chinese, Japanese have no spaces between
# words): character pairs are compared instead.
MIN_WORDS_FOR_WORD_SETS = 3
# The reason of a D_know pair dropped by the headline cap.
HEADLINE_OVER_MIX = "headline_over_mix"
EVIDENCE_COLUMNS = ("link_text", "nearby_heading", "caption_markup")


def _words(text: str) -> list[str]:
    """Case-folded words of ``text``: runs of letters, digits and combining marks (Thai vowel signs, ...)."""
    # str methods, not a regex: linear whatever the input, and nothing to compile for page text.
    return "".join(c if c.isalnum() or unicodedata.category(c)[0] == "M" else " " for c in text.casefold()).split()


def _pairs(words: list[str]) -> set[str]:
    joined = "".join(words)
    return {joined[i : i + 2] for i in range(len(joined) - 1)} or ({joined} if joined else set())


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the word sets of ``a`` and ``b`` (of their character pairs, spaces and punctuation
    left out, when either has fewer than :data:`MIN_WORDS_FOR_WORD_SETS` words); 0.0 when either is empty."""
    words_a, words_b = _words(a), _words(b)
    if not words_a or not words_b:
        return 0.0
    if min(len(words_a), len(words_b)) >= MIN_WORDS_FOR_WORD_SETS:
        set_a, set_b = set(words_a), set(words_b)
    else:
        set_a, set_b = _pairs(words_a), _pairs(words_b)
    return len(set_a & set_b) / len(set_a | set_b)


def alt_kind(
    alt_text: str | None, link_text: str | None, nearby_heading: str | None, caption_markup: str | None
) -> str | None:
    """``headline`` when the alt text (nearly: :data:`HEADLINE_SIMILARITY`) equals the link text or the nearby
    heading, else ``caption`` when the image has caption markup, else ``description``; None without an alt text."""
    if not alt_text:
        return None
    if any(other and similarity(alt_text, other) >= HEADLINE_SIMILARITY for other in (link_text, nearby_heading)):
        return "headline"
    return "caption" if caption_markup else "description"


def with_alt_kind(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with an ``alt_kind`` column judged from ``alt_text`` and the evidence columns (a missing evidence
    column counts as no evidence: raw_crawl tables extracted before they existed)."""
    evidence = [pl.col(c) if c in frame.columns else pl.lit(None, dtype=pl.String).alias(c) for c in EVIDENCE_COLUMNS]
    kinds = [
        alt_kind(*row)
        for row in frame.select(pl.col("alt_text").cast(pl.String), *[e.cast(pl.String) for e in evidence]).iter_rows()
    ]
    return frame.with_columns(pl.Series("alt_kind", kinds, dtype=pl.String))


def kind_shares(frame: pl.DataFrame) -> dict[str, float]:
    """Share of each of :data:`KINDS` among the rows of ``frame`` (column ``alt_kind``), rounded to 4 places;
    every kind is listed, 0.0 when absent (an empty frame gives all 0.0)."""
    counts = frame["alt_kind"].value_counts() if frame.height else None
    by_kind = dict(counts.iter_rows()) if counts is not None else {}
    return {kind: round(by_kind.get(kind, 0) / frame.height, 4) if frame.height else 0.0 for kind in KINDS}


def headline_limit(headlines: int, others: int, max_share: float) -> int:
    """Most headline rows kept beside ``others`` so that headlines are at most ``max_share`` of the kept rows."""
    if max_share >= 1.0:
        return headlines
    if max_share <= 0.0:
        return 0
    return min(headlines, math.floor(max_share * others / (1.0 - max_share) + 1e-9))


def content_ranks(frame: pl.DataFrame, columns: tuple[str, ...] = ("image_sha256", "alt_text")) -> pl.Series:
    """A stable pseudo-random rank of each row from the content of ``columns`` (first 8 bytes of the sha256 of
    their values joined by a unit separator): the same on every run and machine, whatever the row order."""
    rows = frame.select([pl.col(c).cast(pl.String).fill_null("") for c in columns]).iter_rows()
    digests = (hashlib.sha256("\x1f".join(row).encode()).digest()[:8] for row in rows)
    return pl.Series("rank", [int.from_bytes(d, "big") for d in digests], dtype=pl.UInt64)


def cap_headlines(frame: pl.DataFrame, max_share: float, rank: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(kept, over)``: ``frame`` (column ``alt_kind``) with headline rows beyond ``max_share`` of the kept rows
    left out; the headlines kept are those of lowest ``rank`` (a content hash of each row, so the choice is the
    same on every run and does not depend on row order). Row order is kept."""
    headline = frame["alt_kind"] == "headline"
    limit = headline_limit(int(headline.sum()), int((~headline).sum()), max_share)
    if limit >= int(headline.sum()):
        return frame, frame.clear()
    ranked = frame.with_columns(rank.alias("_rank"), pl.int_range(pl.len()).alias("_row"))
    position = pl.col("_rank").rank("ordinal").over(pl.col("alt_kind") == "headline")
    ranked = ranked.with_columns(((pl.col("alt_kind") == "headline") & (position > limit)).alias("_over"))
    kept = ranked.filter(~pl.col("_over")).drop("_rank", "_row", "_over")
    over = ranked.filter(pl.col("_over")).drop("_rank", "_row", "_over")
    return kept, over
