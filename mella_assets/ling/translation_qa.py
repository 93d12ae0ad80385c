"""Quality checks on machine translations: catch empty, looping, untranslated, truncated / runaway or
wrong-language output.

Reasons, in the order they are tested (the first failing one is recorded):

- ``empty_translation``: nothing but whitespace came back.
- ``repetition_loop``: more than half of the word (or, for unspaced scripts, character) trigrams repeat an
  earlier one — the degenerate loop seq2seq models fall into.
- ``untranslated_copy``: the output equals the English (case-folded), or at least ``MAX_COPIED_SHARE`` of its
  words (when it has ``MIN_WORDS_FOR_COPY`` or more) are words of the English source.
- ``length_ratio_out_of_bounds``: output / source length in characters outside the language's bounds.
- ``wrong_language``: the language identifier (the same one D_know uses) does not accept the output as the
  target language (only when enforced; otherwise the check is recorded in ``language_ok``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.lib.text import normalize_text

# Output/input length in characters, per language. A text's length in characters relative to English differs
# by script: Hangul packs a syllable per character (Korean runs ≈ 0.4–0.5 of the English), Thai and Arabic
# omit or join vowels (≈ 0.8–0.9), Latin and Cyrillic languages run ≈ 1.0–1.2. Each window is about 3× either
# side of that typical ratio: a truncated output falls below it, a runaway generation above. These are
# typical-ratio estimates, not measured here (no real translator runs on this machine); override per language
# through the Translator resource's ``length_ratio_bounds``.
DEFAULT_LENGTH_BOUNDS: dict[str, tuple[float, float]] = {
    "ar": (0.3, 2.7),
    "cs": (0.33, 3.3),
    "hu": (0.35, 3.5),
    "ko": (0.15, 1.5),
    "ru": (0.35, 3.5),
    "sr": (0.33, 3.3),
    "th": (0.28, 2.7),
    "vi": (0.35, 3.5),
}
FALLBACK_LENGTH_BOUNDS = (0.15, 4.0)
# Share of repeated word trigrams above which the output is a repetition loop.
MAX_REPEATED_TRIGRAMS = 0.5
# An output whose words are mostly the source's own words was not translated (names and numbers alone stay
# below this share in a real translation of a caption-length text).
MAX_COPIED_SHARE = 0.6
MIN_WORDS_FOR_COPY = 3

REASONS = (
    "empty_translation",
    "repetition_loop",
    "untranslated_copy",
    "length_ratio_out_of_bounds",
    "wrong_language",
)

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TranslationQA:
    """The checks on one translation; ``reason`` is None when it passes."""

    reason: str | None
    detected_language: str
    language_confidence: float
    language_ok: bool
    length_ratio: float
    repeated_trigrams: float
    copied_share: float


def length_bounds(language_code: str, overrides: Mapping[str, Sequence[float]] | None = None) -> tuple[float, float]:
    """(min, max) output/source character ratio for a language: an override, its default, or the fallback."""
    if overrides and language_code in overrides:
        low, high = overrides[language_code]
        if not 0 <= low < high:
            raise ValueError(f"length ratio bounds for {language_code} must satisfy 0 <= min < max: {low}, {high}")
        return float(low), float(high)
    return DEFAULT_LENGTH_BOUNDS.get(language_code, FALLBACK_LENGTH_BOUNDS)


def repeated_trigram_share(text: str) -> float:
    """Share of word (or, for unspaced scripts, character) trigrams that repeat an earlier one."""
    units = text.split()
    if len(units) < 4:
        units = list(text.replace(" ", ""))
    grams = [tuple(units[i : i + 3]) for i in range(len(units) - 2)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def copied_share(source: str, output: str) -> float:
    """Share of the output's words (case-folded) that are words of the source; 1.0 when the texts are equal."""
    if output.casefold() == source.casefold():
        return 1.0
    words = [word.casefold() for word in _WORD.findall(output)]
    if not words:
        return 0.0
    source_words = {word.casefold() for word in _WORD.findall(source)}
    return sum(1 for word in words if word in source_words) / len(words)


def check_translations(
    sources: Sequence[str],
    outputs: Sequence[str],
    language: Language,
    identifier: LanguageIdentifier,
    enforce_language: bool = True,
    bounds: tuple[float, float] | None = None,
) -> list[TranslationQA]:
    """Run every check on (English source, translated output) pairs; the language check is batched."""
    low, high = bounds or length_bounds(language.code)
    texts = [normalize_text(output) for output in outputs]
    nonempty = [i for i, text in enumerate(texts) if text]
    checks = dict(zip(nonempty, identifier.check_many([texts[i] for i in nonempty], language), strict=True))
    results = []
    for i, (source, text) in enumerate(zip(sources, texts, strict=True)):
        source_text = normalize_text(source)
        ratio = len(text) / max(len(source_text), 1)
        repeated = repeated_trigram_share(text)
        copied = copied_share(source_text, text) if text else 0.0
        copy_words = len(_WORD.findall(text))
        check = checks.get(i)
        language_ok = bool(check and check.ok)
        reason = None
        if not text:
            reason = "empty_translation"
        elif repeated > MAX_REPEATED_TRIGRAMS:
            reason = "repetition_loop"
        elif copied == 1.0 or (copied >= MAX_COPIED_SHARE and copy_words >= MIN_WORDS_FOR_COPY):
            reason = "untranslated_copy"
        elif not low <= ratio <= high:
            reason = "length_ratio_out_of_bounds"
        elif enforce_language and not language_ok:
            reason = "wrong_language"
        results.append(
            TranslationQA(
                reason=reason,
                detected_language=check.label if check else "unknown",
                language_confidence=float(check.confidence) if check else 0.0,
                language_ok=language_ok,
                length_ratio=round(ratio, 3),
                repeated_trigrams=round(repeated, 3),
                copied_share=round(copied, 3),
            )
        )
    return results


def check_translation(
    source: str,
    output: str,
    language: Language,
    identifier: LanguageIdentifier,
    enforce_language: bool = True,
    bounds: tuple[float, float] | None = None,
) -> TranslationQA:
    """:func:`check_translations` for one pair."""
    return check_translations([source], [output], language, identifier, enforce_language, bounds)[0]
