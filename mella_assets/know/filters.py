"""Alt-text filters: which (image, alt text) candidates become native D_know pairs, and why the others do not.

Checks run in a fixed order and the first failing one names the reject reason (stable snake_case codes in
:data:`REASONS`). The cheap checks are polars expressions over the whole frame; language ID runs only on the
rows that survive them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import polars as pl
import regex

from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageCheck, LanguageIdentifier
from mella_assets.lib.page_language import page_languages, with_site_priors
from mella_assets.lib.serbo_croatian import serbian_evidence
from mella_assets.lib.text import normalize_text, stop_words

REASONS: tuple[str, ...] = (
    "missing_alt",
    "empty_alt",
    "unsupported_image_url",
    "alt_is_url",
    "alt_is_filename",
    "alt_has_email",
    "alt_has_phone",
    "alt_number_only",
    "alt_repeated_chars",
    "alt_boilerplate",
    "alt_too_short",
    "alt_too_long",
    "wrong_language",
    "language_uncertain",
    "duplicate_pair",
)

# Words that mark page furniture in any language (web alt texts are full of English CMS defaults).
ENGLISH_BOILERPLATE: tuple[str, ...] = (
    "logo", "icon", "icons", "banner", "avatar", "spacer", "pixel", "image", "img", "photo", "picture", "pic",
    "thumbnail", "thumb", "button", "btn", "arrow", "loading", "loader", "placeholder", "blank", "transparent",
    "advertisement", "ad", "ads", "untitled", "default", "header", "footer", "background", "bg", "menu", "search",
    "close", "share", "rss", "facebook", "twitter", "instagram", "youtube", "linkedin", "pinterest", "tiktok",
    "whatsapp", "telegram", "vk", "of", "the", "a", "an", "and", "for", "our",
)  # fmt: skip

_URL = r"(?i)^(?:https?://|ftp://|www\.)\S*$"
_IMAGE_EXTENSIONS = r"jpe?g|jpe|png|gif|webp|bmp|svg|tiff?|avif|heic|ico"
# A file name ("IMG_2041.jpg", "photo-1.png", "image.webp") or a bare camera name ("DSC00123", "IMG_2041").
_FILENAME = rf"(?i)^(?:[\w\-.() ]*\.(?:{_IMAGE_EXTENSIONS})|(?:img|dsc|dscn|dscf|pxl|pict?|sam|gopr|p)[_\- ]?\d+)$"
_WORD = r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*"
_EMAIL = r"(?i)[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}"
# A phone number: optional +/00 prefix, then digits with spaces, dots, dashes or brackets between them; the
# digit count is checked separately (9-15, ITU E.164), so years, dates and prices do not match.
_PHONE_CANDIDATE = r"(?:\+|\b00)?\(?\d[\d ().\-/]{6,22}\d"


@dataclass(frozen=True)
class FilterConfig:
    """Every threshold of the alt-text filters; the defaults are what the pipeline runs with.

    - ``min_chars`` / ``max_chars``: per-language overrides of ``Language.min_alt_chars`` / ``max_alt_chars``
      (defaults there: 8 / 250 characters; Korean 4 / 150, Thai 5 / 200, ... since those scripts pack more
      meaning per character).
    - ``min_words``: words a space-separated language needs (Thai, Korean, ... are not counted in words).
    - ``max_char_run``: a letter or sign repeated more than this in a row is spam ("!!!!!!", "soooooo").
    - ``max_unit_repeats``: a 2-3 character unit repeated more than this in a row is spam ("hahahahaha").
    - ``pii``: ``reject`` (default) rejects alts with an e-mail or a phone number, ``redact`` removes them and
      keeps the rest, ``keep`` does nothing.
    - ``close_ratio``: the language-ID close-call ratio (see ``lib/langid.py``), 0.5.
    - ``min_confidence``: per-language lowest detector confidence to keep (default none: the relative rule
      decides); below it a kept alt becomes ``language_uncertain``.
    """

    min_chars: dict[str, int] = field(default_factory=dict)
    max_chars: dict[str, int] = field(default_factory=dict)
    min_words: int = 2
    max_char_run: int = 4
    max_unit_repeats: int = 3
    pii: Literal["reject", "redact", "keep"] = "reject"
    close_ratio: float = 0.5
    min_confidence: dict[str, float] = field(default_factory=dict)


DEFAULT_FILTER_CONFIG = FilterConfig()


def _phone_expr(alt: pl.Expr) -> pl.Expr:
    """True when a candidate phone number with 9 to 15 digits occurs in the text."""
    digits = alt.str.extract_all(_PHONE_CANDIDATE).list.eval(pl.element().str.count_matches(r"\d").is_between(9, 15))
    return digits.list.any().fill_null(False)


def _redact_pii(alt: pl.Expr) -> pl.Expr:
    """The text without e-mail addresses and phone numbers, whitespace collapsed."""
    without_email = alt.str.replace_all(_EMAIL, " ")
    return (
        without_email.str.replace_all(r"(?:\+|\b00)?\(?\d[\d ().\-/]{9,22}\d", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


KEPT_EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "alt_text": pl.String(),
    "page_language": pl.String(),
    "detected_language": pl.String(),
    "language_confidence": pl.Float64(),
    "language": pl.String(),
}
REJECT_EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "alt_text": pl.String(),
    "page_language": pl.String(),
    "reason": pl.String(),
    "language": pl.String(),
}
_TEXT_INPUTS = ("page_url", "domain", "image_url", "alt_raw", "html_lang", "og_locale")


@dataclass(frozen=True)
class FilterResult:
    """Kept pairs and rejected candidates (each reject with its ``reason``)."""

    kept: pl.DataFrame
    rejects: pl.DataFrame


@cache
def _boilerplate_pattern(language: Language) -> regex.Pattern[str]:
    """Whole-word matcher of the language's and the English boilerplate words, longest first."""
    words = sorted({w.casefold() for w in (*language.boilerplate_words, *ENGLISH_BOILERPLATE)}, key=len, reverse=True)
    alternatives = "|".join(regex.escape(w) for w in words)
    return regex.compile(rf"(?<![\p{{L}}\p{{N}}])(?:{alternatives})(?![\p{{L}}\p{{M}}\p{{N}}])")


def is_boilerplate(alt_text: str, language: Language) -> bool:
    """True when an alt text is page furniture: nothing but boilerplate words, stop words and numbers, or a
    boilerplate word followed by one word at most ("logo Facebook", "ikona košíku")."""
    folded = alt_text.casefold()
    pattern = _boilerplate_pattern(language)
    starts_with_boilerplate = pattern.match(folded) is not None
    stops = stop_words(language.code)
    remaining = [w for w in regex.findall(_WORD, pattern.sub(" ", folded)) if w not in stops and not w.isdigit()]
    if not remaining:
        return True
    return starts_with_boilerplate and len(remaining) <= 1


def _cheap_reason(language: Language, config: FilterConfig = DEFAULT_FILTER_CONFIG) -> pl.Expr:
    """The first failing cheap check per row, or null."""
    alt = pl.col("alt_text")
    min_chars = config.min_chars.get(language.code, language.min_alt_chars)
    max_chars = config.max_chars.get(language.code, language.max_alt_chars)
    too_short = alt.str.len_chars() < min_chars
    if language.word_tokenizer == "regex":  # space-separated: a description needs two words at least
        too_short = too_short | (alt.str.count_matches(_WORD) < config.min_words)
    check_pii = config.pii == "reject"
    char_run = rf"([^\d\s])\1{{{config.max_char_run},}}"
    unit_run = rf"(\D{{2,3}})\1{{{config.max_unit_repeats},}}"
    return (
        pl.when(pl.col("alt_raw").is_null())
        .then(pl.lit("missing_alt"))
        .when(alt == "")
        .then(pl.lit("empty_alt"))
        .when(pl.col("image_url").is_null() | ~pl.col("image_url").str.contains(r"(?i)^https?://"))
        .then(pl.lit("unsupported_image_url"))
        .when(alt.str.contains(_URL))
        .then(pl.lit("alt_is_url"))
        .when(alt.str.contains(_FILENAME))
        .then(pl.lit("alt_is_filename"))
        .when(pl.lit(check_pii) & alt.str.contains(_EMAIL))
        .then(pl.lit("alt_has_email"))
        .when(pl.lit(check_pii) & _phone_expr(alt))
        .then(pl.lit("alt_has_phone"))
        .when(~alt.str.contains(r"\p{L}"))
        .then(pl.lit("alt_number_only"))
        .when(alt.map_elements(lambda t: _has_run(t, char_run, unit_run), return_dtype=pl.Boolean))
        .then(pl.lit("alt_repeated_chars"))
        .when(alt.map_elements(lambda text: is_boilerplate(text, language), return_dtype=pl.Boolean))
        .then(pl.lit("alt_boilerplate"))
        .when(too_short)
        .then(pl.lit("alt_too_short"))
        .when(alt.str.len_chars() > max_chars)
        .then(pl.lit("alt_too_long"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def _has_run(text: str, char_run: str, unit_run: str) -> bool:
    # Backreferences: the regex module, not polars' Rust regex, supports them.
    return regex.search(char_run, text) is not None or regex.search(unit_run, text) is not None


def filter_alt_texts(
    candidates: pl.DataFrame,
    language: Language,
    identifier: LanguageIdentifier,
    config: FilterConfig = DEFAULT_FILTER_CONFIG,
) -> FilterResult:
    """Split candidates (page_url, domain, image_url, alt_raw, html_lang, ...) into kept pairs and rejects.

    Kept: input columns + ``alt_text`` (normalised), ``page_language`` (the prior language ID used: the page's
    ``<html lang>``, else ``og:locale``, else its national domain; see ``lib/page_language.py``),
    ``detected_language``, ``language_confidence``, ``language``. Rejects: input columns + ``alt_text`` (null when
    missing), ``page_language``, ``reason``, ``language``. Input order is preserved in both; the first of
    duplicate (image_url, alt_text) pairs is kept.
    """
    input_columns = [c for c in candidates.columns if c not in {*KEPT_EXTRA_SCHEMA, *REJECT_EXTRA_SCHEMA}]
    frame = candidates.select(input_columns).with_columns(
        [pl.col(c).cast(pl.String) for c in _TEXT_INPUTS if c in input_columns]
    )
    for column in ("alt_raw", "image_url", "html_lang"):
        if column not in frame.columns:
            raise ValueError(f"filter_alt_texts needs a {column!r} column; got {candidates.columns}")
    frame = frame.with_row_index("_row").with_columns(
        pl.col("alt_raw").map_elements(normalize_text, return_dtype=pl.String).alias("alt_text")
    )
    frame = frame.with_columns(pl.Series("page_language", page_priors(frame, language), dtype=pl.String))
    if config.pii == "redact":
        frame = frame.with_columns(_redact_pii(pl.col("alt_text")).alias("alt_text"))
    frame = frame.with_columns(_cheap_reason(language, config).alias("reason"))

    # Language ID only for the survivors of the cheap checks, in one batch.
    survivors = frame.filter(pl.col("reason").is_null())
    identifier.close_ratio = config.close_ratio
    checks = identifier.check_many(survivors["alt_text"].to_list(), language, survivors["page_language"].to_list())
    floor = config.min_confidence.get(language.code, 0.0)
    checks = [
        LanguageCheck(False, c.label, c.confidence, "language_uncertain") if c.ok and c.confidence < floor else c
        for c in checks
    ]
    language_columns = pl.DataFrame(
        {
            "_row": survivors["_row"],
            "_lid_reason": [c.reason for c in checks],
            "detected_language": [c.label for c in checks],
            "language_confidence": [c.confidence for c in checks],
        },
        schema={
            "_row": pl.UInt32,
            "_lid_reason": pl.String,
            "detected_language": pl.String,
            "language_confidence": pl.Float64,
        },
    )
    frame = (
        frame.join(language_columns, on="_row", how="left", maintain_order="left")
        .sort("_row")
        .with_columns(pl.coalesce("reason", "_lid_reason").alias("reason"))
    )
    # Of the rows that passed everything, each (image_url, alt_text) pair is kept once: its first occurrence.
    passed = pl.col("reason").is_null()
    first_of_pair = pl.int_range(pl.len()).over(["image_url", "alt_text", passed]) == 0
    frame = frame.with_columns(
        pl.when(passed & ~first_of_pair).then(pl.lit("duplicate_pair")).otherwise(pl.col("reason")).alias("reason"),
        pl.lit(language.code, dtype=pl.String).alias("language"),
    )
    kept = frame.filter(pl.col("reason").is_null()).select(*input_columns, *KEPT_EXTRA_SCHEMA)
    rejects = frame.filter(pl.col("reason").is_not_null()).select(*input_columns, *REJECT_EXTRA_SCHEMA)
    return FilterResult(kept=kept, rejects=rejects)


def page_priors(frame: pl.DataFrame, language: Language) -> list[str | None]:
    """The page prior of each row of ``frame`` (columns ``html_lang``, ``alt_text``, optionally ``page_url``,
    ``og_locale``; ``lib/page_language.py``): the page's own signals, else its site's. For
    Serbian, alt texts whose words tell ekavian Serbian (vote sr) from ijekavian / Croatian (vote hr) are the
    site's text votes."""
    page_urls = frame["page_url"].to_list() if "page_url" in frame.columns else [None] * frame.height
    og_locales = frame["og_locale"].to_list() if "og_locale" in frame.columns else [None] * frame.height
    priors = page_languages(frame["html_lang"].to_list(), og_locales, page_urls)
    votes = None
    if language.code == "sr":
        evidence = [serbian_evidence(text) if text else 0 for text in frame["alt_text"].to_list()]
        votes = ["sr" if e > 0 else "hr" if e < 0 else None for e in evidence]
    return [prior.code for prior in with_site_priors(priors, page_urls, votes)]


def counts_by_reason(rejects: pl.DataFrame) -> dict[str, int]:
    """Number of rejects per reason, sorted by reason."""
    if rejects.is_empty():
        return {}
    counts = rejects.group_by("reason").len().sort("reason")
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))
