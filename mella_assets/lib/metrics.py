"""Evaluation metrics (DESIGN §9): keyword accuracy (D_know), METEOR (D_ling), chrF (both).

Our operational definitions; the paper's exact ones are not public.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from mella_assets.languages import Language
from mella_assets.lib.text import fold_serbian, get_stemmer, keywords, tokenize_words


@dataclass(frozen=True)
class MetricResult:
    """A corpus score: ``value`` is the mean over scored items (None when none could be scored)."""

    value: float | None
    n_items: int  # items given
    n_skipped: int  # items without a scorable reference (no keyword / no token)


def keyword_accuracy(reference: str, hypothesis: str, language: Language) -> float | None:
    """Share of the reference's keywords found among the hypothesis's keywords; None when the reference has
    no keyword (e.g. only stop words)."""
    reference_keywords = keywords(reference, language)
    if not reference_keywords:
        return None
    hypothesis_keywords = set(keywords(hypothesis, language))
    found = sum(1 for keyword in reference_keywords if keyword in hypothesis_keywords)
    return found / len(reference_keywords)


def corpus_keyword_accuracy(references: Sequence[str], hypotheses: Sequence[str], language: Language) -> MetricResult:
    """Mean :func:`keyword_accuracy` over items; items whose reference has no keyword are skipped and counted."""
    _check_lengths(references, hypotheses)
    scores = [keyword_accuracy(r, h, language) for r, h in zip(references, hypotheses, strict=True)]
    return _mean_result(scores)


class _IdentityStemmer:
    """Stands in where Snowball has no stemmer (ko: morphemes already, th, vi: isolating)."""

    def stem(self, word: str) -> str:
        return word


class _PyStemmerAdapter:
    """NLTK's METEOR calls ``stemmer.stem(word)``; PyStemmer spells it ``stemWord``."""

    def __init__(self, algorithm: str) -> None:
        self._stemmer = get_stemmer(algorithm)

    def stem(self, word: str) -> str:
        return self._stemmer.stemWord(word)


class _NoWordNet:
    """No synonym module: WordNet exists only for English, and ``nltk.download`` cannot run offline."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


@cache
def _meteor_stemmer(algorithm: str | None) -> Any:
    return _PyStemmerAdapter(algorithm) if algorithm else _IdentityStemmer()


def meteor_tokens(text: str, language: Language) -> list[str]:
    """Tokens METEOR compares: language-aware words, case-folded, Serbian folded to Latin."""
    tokens = [token.casefold() for token in tokenize_words(text, language)]
    return [fold_serbian(token) for token in tokens] if language.code == "sr" else tokens


def meteor(reference: str, hypothesis: str, language: Language) -> float:
    """NLTK METEOR of one hypothesis against one reference, on language-aware tokens with the language's
    stemmer and no synonyms (0.0 when either side has no token)."""
    from nltk.translate.meteor_score import meteor_score

    reference_tokens = meteor_tokens(reference, language)
    hypothesis_tokens = meteor_tokens(hypothesis, language)
    if not reference_tokens or not hypothesis_tokens:
        return 0.0
    return float(
        meteor_score(
            [reference_tokens],
            hypothesis_tokens,
            preprocess=str,  # tokens are case-folded already; str.lower would undo nothing but cost time
            stemmer=_meteor_stemmer(language.stemmer),
            wordnet=_NoWordNet(),
        )
    )


def corpus_meteor(references: Sequence[str], hypotheses: Sequence[str], language: Language) -> MetricResult:
    """Mean :func:`meteor` over items; items with an empty reference are skipped and counted."""
    _check_lengths(references, hypotheses)
    scores = [
        meteor(r, h, language) if meteor_tokens(r, language) else None
        for r, h in zip(references, hypotheses, strict=True)
    ]
    return _mean_result(scores)


def chrf(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu, character 6-grams, beta 2, no word n-grams) on a 0-100 scale; 0.0 for no items."""
    from sacrebleu.metrics import CHRF

    _check_lengths(references, hypotheses)
    if not references:
        return 0.0
    return float(CHRF(word_order=0).corpus_score(list(hypotheses), [list(references)]).score)


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def _mean_result(scores: Sequence[float | None]) -> MetricResult:
    scored = [s for s in scores if s is not None]
    value = sum(scored) / len(scored) if scored else None
    return MetricResult(value=value, n_items=len(scores), n_skipped=len(scores) - len(scored))
