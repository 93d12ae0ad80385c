"""Alt-text filters: which (image, alt text) candidates become native D_know pairs, and why the others do not.

A kept alt text is meant to be a useful image description in the target language. Before it is judged, photo
credits and bylines are stripped (``know/credits.py``: "Foto: ČTK", "사진=연합뉴스", a reporter's e-mail, a
trailing date); the cleaned text is ``alt_text``, what D_know gets. Checks then run in a fixed order and the first
failing one names the reject reason (stable snake_case codes in :data:`REASONS`):

- the text itself: missing, empty, only a credit, a URL or file name, PII, numbers, spam runs;
- page furniture: boilerplate lexicons per language (``know/lexicons/``: social networks, navigation,
  print/share, app stores, captcha, weather, font size, ads, "photo"/"thumbnail" words), the site's own name
  (``og:site_name``, the title's suffix, the domain's label) and alt texts repeated across many pages of a site;
- length in characters and in word units (``Language.min_alt_words``: one- and two-word alts are labels);
- the page's declared language (``<html lang>``, else ``og:locale``): a page declaring another language rejects
  whatever the text-level ID says; the text rule decides where the page is silent, says English (a CMS default),
  or its two declarations disagree;
- language ID (``lib/langid.py``) on the rows that survive, in one batch (for a language not written in Latin
  script, without the Latin-script words of a mostly native text: an English league name in a Russian caption);
- names only: in the language, after stripping, a word that is not a proper name must remain.

The checks up to the page gate are expressions over the whole frame (some call Python per row: credits,
boilerplate, site name, word units); language ID and the names-only check run only on the rows still undecided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl
import regex

from mella_assets.know.boilerplate import (
    boilerplate_class,
    names_the_site,
    registered_label,
    site_names_by_host,
)
from mella_assets.know.credits import has_content_words, strip_credits
from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageCheck, LanguageIdentifier
from mella_assets.lib.page_language import (
    declared_mismatch,
    host_of,
    page_languages,
    with_site_priors,
)
from mella_assets.lib.serbo_croatian import serbian_evidence
from mella_assets.lib.text import normalize_text, script_of, word_units

REASONS: tuple[str, ...] = (
    "missing_alt",
    "empty_alt",
    "alt_credit_only",
    "unsupported_image_url",
    "alt_is_url",
    "alt_is_filename",
    "alt_has_email",
    "alt_has_phone",
    "alt_number_only",
    "alt_repeated_chars",
    "alt_boilerplate",
    "alt_site_name",
    "alt_site_repeated",
    "alt_too_short",
    "alt_too_long",
    "page_language_mismatch",
    "wrong_language",
    "language_uncertain",
    "alt_names_only",
    "duplicate_pair",
)

_URL = r"(?i)^(?:https?://|ftp://|www\.)\S*$"
_IMAGE_EXTENSIONS = r"jpe?g|jpe|png|gif|webp|bmp|svg|tiff?|avif|heic|ico"
# A file name ("IMG_2041.jpg", "photo-1.png", "image.webp") or a bare camera name ("DSC00123", "IMG_2041").
_FILENAME = rf"(?i)^(?:[\w\-.() ]*\.(?:{_IMAGE_EXTENSIONS})|(?:img|dsc|dscn|dscf|pxl|pict?|sam|gopr|p)[_\- ]?\d+)$"
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
    - ``min_words``: per-language overrides of ``Language.min_alt_words``, the fewest word units an alt needs
      (default 3; Vietnamese 4 syllables). Word units: whitespace words, Korean eojeol, Thai newmm words.
    - ``max_char_run``: a letter or sign repeated more than this in a row is spam ("!!!!!!", "soooooo").
    - ``max_unit_repeats``: a 2-3 character unit repeated more than this in a row is spam ("hahahahaha").
    - ``pii``: ``reject`` (default) rejects alts with an e-mail or a phone number, ``redact`` removes them and
      keeps the rest, ``keep`` does nothing. A reporter's e-mail at the end of a caption is a credit: it is
      stripped before this check.
    - ``strip_credits``: strip photo credits, bylines, trailing e-mails and dates before judging (default on).
    - ``site_repeat_min_pages`` / ``site_repeat_min_share``: the same image with the same alt text on at least
      this many distinct pages of one host, and on at least this share of the host's pages, is site furniture
      (``alt_site_repeated``; 4 and 0.5). Rarer repeats are kept once (``duplicate_pair``).
    - ``page_language_gate``: reject alts of pages that declare another language (default on).
    - ``close_ratio``: the language-ID close-call ratio (see ``lib/langid.py``), 0.5.
    - ``min_confidence``: per-language lowest detector confidence to keep (default none: the relative rule
      decides); below it a kept alt becomes ``language_uncertain``.
    """

    min_chars: dict[str, int] = field(default_factory=dict)
    max_chars: dict[str, int] = field(default_factory=dict)
    min_words: dict[str, int] = field(default_factory=dict)
    max_char_run: int = 4
    max_unit_repeats: int = 3
    pii: Literal["reject", "redact", "keep"] = "reject"
    strip_credits: bool = True
    site_repeat_min_pages: int = 4
    site_repeat_min_share: float = 0.5
    page_language_gate: bool = True
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
_TEXT_INPUTS = ("page_url", "domain", "image_url", "alt_raw", "html_lang", "og_locale", "title", "site_name")


@dataclass(frozen=True)
class FilterResult:
    """Kept pairs and rejected candidates (each reject with its ``reason``)."""

    kept: pl.DataFrame
    rejects: pl.DataFrame


def is_boilerplate(alt_text: str, language: Language) -> bool:
    """True when an alt text is page furniture (``know/boilerplate.py``: lexicon phrases, stop words and numbers
    only, a lexicon phrase followed by one word at most, or a paid-content marker)."""
    return boilerplate_class(alt_text, language) is not None


def min_words_of(language: Language, config: FilterConfig = DEFAULT_FILTER_CONFIG) -> int:
    """The fewest word units an alt text of ``language`` needs under ``config``."""
    return config.min_words.get(language.code, language.min_alt_words)


def _cheap_reason(language: Language, config: FilterConfig = DEFAULT_FILTER_CONFIG) -> pl.Expr:
    """The first failing cheap check per row, or null (the site columns ``_site_name`` and ``_site_repeated``
    must be present)."""
    alt = pl.col("alt_text")
    min_chars = config.min_chars.get(language.code, language.min_alt_chars)
    max_chars = config.max_chars.get(language.code, language.max_alt_chars)
    min_words = min_words_of(language, config)
    too_short = (alt.str.len_chars() < min_chars) | (
        alt.map_elements(lambda text: len(word_units(text, language)), return_dtype=pl.Int64) < min_words
    )
    check_pii = config.pii == "reject"
    char_run = rf"([^\d\s])\1{{{config.max_char_run},}}"
    unit_run = rf"(\D{{2,3}})\1{{{config.max_unit_repeats},}}"
    return (
        pl.when(pl.col("alt_raw").is_null())
        .then(pl.lit("missing_alt"))
        .when(pl.col("_alt_normalized") == "")
        .then(pl.lit("empty_alt"))
        .when(alt == "")
        .then(pl.lit("alt_credit_only"))
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
        .when(pl.col("_site_name"))
        .then(pl.lit("alt_site_name"))
        .when(pl.col("_site_repeated"))
        .then(pl.lit("alt_site_repeated"))
        .when(too_short)
        .then(pl.lit("alt_too_short"))
        .when(alt.str.len_chars() > max_chars)
        .then(pl.lit("alt_too_long"))
        .when(pl.col("_page_mismatch"))
        .then(pl.lit("page_language_mismatch"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def _has_run(text: str, char_run: str, unit_run: str) -> bool:
    # Backreferences: the regex module, not polars' Rust regex, supports them.
    return regex.search(char_run, text) is not None or regex.search(unit_run, text) is not None


def _hosts(frame: pl.DataFrame) -> list[str | None]:
    if "page_url" in frame.columns:
        return [host_of(url) for url in frame["page_url"].to_list()]
    if "domain" in frame.columns:
        return frame["domain"].to_list()
    return [None] * frame.height


def _site_name_flags(frame: pl.DataFrame, language: Language, hosts: list[str | None]) -> list[bool]:
    """Per row: the alt text is the site's own name (``og:site_name`` in column ``site_name``, a name read off
    the host's page titles in column ``title``, or the registered domain's label)."""
    page_urls = frame["page_url"].to_list() if "page_url" in frame.columns else [None] * frame.height
    titles = frame["title"].to_list() if "title" in frame.columns else [None] * frame.height
    declared = frame["site_name"].to_list() if "site_name" in frame.columns else [None] * frame.height
    by_host = site_names_by_host(hosts, page_urls, titles)
    seen: dict[tuple, bool] = {}  # the same alt on the same site is judged once
    flags = []
    for alt, host, site_name in zip(frame["alt_text"].to_list(), hosts, declared, strict=True):
        key = (alt, host, site_name)
        if key not in seen:
            names = {*by_host.get(host, ()), *([site_name] if site_name else [])}
            seen[key] = bool(alt) and names_the_site(alt, names, registered_label(host), language)
        flags.append(seen[key])
    return flags


def _site_repeated(frame: pl.DataFrame, config: FilterConfig) -> pl.Expr:
    """True where the same image with the same alt text (case-folded; the image's URL without its query string) is
    on ``site_repeat_min_pages`` distinct pages of its host or more, and on ``site_repeat_min_share`` of them at
    least (column ``_host`` present): a logo, a banner, a promo box. The same description on different images
    (a gallery's caption reused) is no furniture."""
    page = pl.col("page_url") if "page_url" in frame.columns else pl.col("_row").cast(pl.String)
    key = pl.col("alt_text").str.to_lowercase()
    image = pl.col("image_url").str.replace(r"[?#].*$", "")
    pages_with_alt = page.n_unique().over(["_host", key, image])
    host_pages = page.n_unique().over("_host")
    return (
        pl.col("_host").is_not_null()
        & (pl.col("alt_text") != "")
        & (pages_with_alt >= config.site_repeat_min_pages)
        & (pages_with_alt >= config.site_repeat_min_share * host_pages)
    ).fill_null(False)


def _text_for_language_id(text: str, language: Language) -> str:
    """The text language ID judges: for a language not written in Latin script, a mostly native text without its
    Latin-script words ("Холанд забил в матче Premier League": the league's name says nothing of the caption's
    language); otherwise the text itself."""
    if "Latn" in language.scripts:
        return text
    shares = script_of(text)
    if sum(shares.get(script, 0.0) for script in language.scripts) < 0.5:
        return text
    kept = [word for word in text.split(" ") if script_of(word)["Latn"] < 0.5]
    return " ".join(kept) or text


def filter_alt_texts(
    candidates: pl.DataFrame,
    language: Language,
    identifier: LanguageIdentifier,
    config: FilterConfig = DEFAULT_FILTER_CONFIG,
) -> FilterResult:
    """Split candidates (page_url, domain, image_url, alt_raw, html_lang, optionally og_locale, title,
    site_name, ...) into kept pairs and rejects.

    Kept: input columns + ``alt_text`` (normalised, credits stripped), ``page_language`` (the prior language ID
    used: the page's ``<html lang>``, else ``og:locale``, else its national domain; see
    ``lib/page_language.py``), ``detected_language``, ``language_confidence``, ``language``. Rejects: input
    columns + ``alt_text`` (null when missing), ``page_language``, ``reason``, ``language``. Input order is
    preserved in both; the first of duplicate (image_url, alt_text) pairs is kept.
    """
    input_columns = [c for c in candidates.columns if c not in {*KEPT_EXTRA_SCHEMA, *REJECT_EXTRA_SCHEMA}]
    frame = candidates.select(input_columns).with_columns(
        [pl.col(c).cast(pl.String) for c in _TEXT_INPUTS if c in input_columns]
    )
    for column in ("alt_raw", "image_url", "html_lang"):
        if column not in frame.columns:
            raise ValueError(f"filter_alt_texts needs a {column!r} column; got {candidates.columns}")
    strip = strip_credits if config.strip_credits else (lambda text: text)
    frame = frame.with_row_index("_row").with_columns(
        pl.col("alt_raw").map_elements(normalize_text, return_dtype=pl.String).alias("_alt_normalized")
    )
    frame = frame.with_columns(pl.col("_alt_normalized").map_elements(strip, return_dtype=pl.String).alias("alt_text"))
    frame = frame.with_columns(pl.Series("page_language", page_priors(frame, language), dtype=pl.String))
    if config.pii == "redact":
        frame = frame.with_columns(_redact_pii(pl.col("alt_text")).alias("alt_text"))
    hosts = _hosts(frame)
    og_locales = frame["og_locale"].to_list() if "og_locale" in frame.columns else [None] * frame.height
    mismatch = [
        config.page_language_gate and declared_mismatch(html_lang, og_locale, language)
        for html_lang, og_locale in zip(frame["html_lang"].to_list(), og_locales, strict=True)
    ]
    frame = frame.with_columns(
        pl.Series("_host", hosts, dtype=pl.String),
        pl.Series("_site_name", _site_name_flags(frame, language, hosts), dtype=pl.Boolean),
        pl.Series("_page_mismatch", mismatch, dtype=pl.Boolean),
    )
    frame = frame.with_columns(_site_repeated(frame, config).alias("_site_repeated"))
    frame = frame.with_columns(_cheap_reason(language, config).alias("reason"))

    # Language ID only for the survivors of the cheap checks, in one batch.
    survivors = frame.filter(pl.col("reason").is_null())
    identifier.close_ratio = config.close_ratio
    texts = [_text_for_language_id(text, language) for text in survivors["alt_text"].to_list()]
    checks = identifier.check_many(texts, language, survivors["page_language"].to_list())
    floor = config.min_confidence.get(language.code, 0.0)
    checks = [
        LanguageCheck(False, c.label, c.confidence, "language_uncertain") if c.ok and c.confidence < floor else c
        for c in checks
    ]
    # In the language now: does it say something, or only name people, teams and places?
    checks = [
        LanguageCheck(False, c.label, c.confidence, "alt_names_only")
        if c.ok and not has_content_words(text, language)
        else c
        for c, text in zip(checks, survivors["alt_text"].to_list(), strict=True)
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
