"""Quality checks on machine translations: catch empty, truncated, runaway, looping or wrong-language output."""

from __future__ import annotations

from dataclasses import dataclass

from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.lib.text import normalize_text

# Output/input length in characters. Hangul and Thai need far fewer characters than English for the same
# content (≈ 0.3–0.5 for Korean), so the lower bound is loose; runaway generation shows as a high ratio.
MIN_LENGTH_RATIO = 0.15
MAX_LENGTH_RATIO = 4.0
# Share of repeated word trigrams above which the output is a repetition loop.
MAX_REPEATED_TRIGRAMS = 0.5


@dataclass(frozen=True)
class TranslationQA:
    """The checks on one translation; ``reason`` is None when it passes."""

    reason: str | None
    detected_language: str
    language_confidence: float
    language_ok: bool
    length_ratio: float
    repeated_trigrams: float


def repeated_trigram_share(text: str) -> float:
    """Share of word (or, for unspaced scripts, character) trigrams that repeat an earlier one."""
    units = text.split()
    if len(units) < 4:
        units = list(text.replace(" ", ""))
    grams = [tuple(units[i : i + 3]) for i in range(len(units) - 2)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def check_translation(
    source: str,
    output: str,
    language: Language,
    identifier: LanguageIdentifier,
    enforce_language: bool = True,
) -> TranslationQA:
    """Run every check on one (English source, translated output) pair; the first failing check is the reason."""
    text = normalize_text(output)
    ratio = len(text) / max(len(normalize_text(source)), 1)
    repeated = repeated_trigram_share(text)
    check = identifier.check(text, language) if text else None
    language_ok = bool(check and check.ok)
    reason = None
    if not text:
        reason = "empty_translation"
    elif repeated > MAX_REPEATED_TRIGRAMS:
        reason = "repetition_loop"
    elif not MIN_LENGTH_RATIO <= ratio <= MAX_LENGTH_RATIO:
        reason = "length_ratio_out_of_bounds"
    elif enforce_language and not language_ok:
        reason = "wrong_language"
    return TranslationQA(
        reason=reason,
        detected_language=check.label if check else "unknown",
        language_confidence=float(check.confidence) if check else 0.0,
        language_ok=language_ok,
        length_ratio=round(ratio, 3),
        repeated_trigrams=round(repeated, 3),
    )
