"""Evaluation metrics: keyword accuracy (D_know), METEOR (D_ling), chrF (both), and seeded
bootstrap confidence intervals.

Our operational definitions; the paper's exact ones are not public.

- Keyword accuracy: share of the reference's keywords (:func:`mella_assets.lib.text.keywords`: language-aware
  words, stop words and numbers dropped, case-folded, NFC, Serbian folded to Latin, stemmed with PyStemmer where
  it has the language) found among the hypothesis's keywords. References without a keyword are skipped, counted.
- METEOR: NLTK's ``meteor_score`` on the same language-aware tokens (case-folded, Serbian folded), the language's
  PyStemmer stemmer (identity for ko, th, vi) and **no synonym stage**: WordNet exists only for English and cannot
  be downloaded offline, so an empty WordNet stands in for every language, English included.
- chrF: sacrebleu's corpus chrF (character 6-grams, beta 2, no word n-grams, so no tokeniser is involved: it
  suits Thai and Korean), 0-100.
- Confidence intervals: percentile bootstrap over items (1,000 resamples, seed 0 by default), so the same
  inputs always give the same interval; chrF is resampled on its per-item n-gram statistics.

Empty references or hypotheses never raise: an empty hypothesis scores 0, an empty reference is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

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


@cache
def _chrf_metric() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=0)


def chrf_statistics(references: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Per-item chrF n-gram statistics (items × sacrebleu's statistic vector); summing rows and scoring the sum
    is corpus chrF. sacrebleu exposes this only through ``_extract_corpus_statistics``."""
    _check_lengths(references, hypotheses)
    if not references:
        return np.zeros((0, 0))
    stats = _chrf_metric()._extract_corpus_statistics(list(hypotheses), [list(references)])
    return np.asarray(stats, dtype=np.float64)


def chrf_from_statistics(statistics: np.ndarray) -> float:
    """chrF (0-100) of summed statistics (one row = one item; several rows are summed first)."""
    if statistics.size == 0:
        return 0.0
    summed = statistics.sum(axis=0) if statistics.ndim == 2 else statistics
    return float(_chrf_metric()._compute_score_from_stats([int(v) for v in summed]).score)


def chrf(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu, character 6-grams, beta 2, no word n-grams) on a 0-100 scale; 0.0 for no items."""
    return chrf_from_statistics(chrf_statistics(references, hypotheses))


def sentence_chrf(reference: str, hypothesis: str) -> float:
    """chrF of one item (0-100)."""
    return chrf([reference], [hypothesis])


DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def bootstrap_interval(
    n_items: int,
    statistic: Any,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n_resamples`` resamples of ``n_items``
    items with replacement (seeded: identical inputs give identical intervals); None for no items."""
    if n_items == 0:
        return None
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        values[b] = statistic(rng.integers(0, n_items, size=n_items))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(
    scores: Sequence[float | None], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of the mean of the scored items (None entries = skipped items are left out)."""
    values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    return bootstrap_interval(len(values), lambda idx: values[idx].mean(), n_resamples, seed)


def paired_mean_delta_interval(
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Paired bootstrap interval of mean(candidate) − mean(baseline) over the items both scored."""
    _check_lengths(baseline, candidate)
    pairs = [(a, b) for a, b in zip(baseline, candidate, strict=True) if a is not None and b is not None]
    diffs = np.asarray([b - a for a, b in pairs], dtype=np.float64)
    return bootstrap_interval(len(diffs), lambda idx: diffs[idx].mean(), n_resamples, seed)


def chrf_interval(
    statistics: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of corpus chrF from per-item statistics (:func:`chrf_statistics`)."""
    return bootstrap_interval(len(statistics), lambda idx: chrf_from_statistics(statistics[idx]), n_resamples, seed)


def paired_chrf_delta_interval(
    baseline: np.ndarray, candidate: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """Paired bootstrap interval of corpus chrF(candidate) − chrF(baseline) on the same items."""
    if len(baseline) != len(candidate):
        raise ValueError(f"{len(baseline)} baseline items but {len(candidate)} candidate items")
    return bootstrap_interval(
        len(baseline),
        lambda idx: chrf_from_statistics(candidate[idx]) - chrf_from_statistics(baseline[idx]),
        n_resamples,
        seed,
    )


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def _mean_result(scores: Sequence[float | None]) -> MetricResult:
    scored = [s for s in scores if s is not None]
    value = sum(scored) / len(scored) if scored else None
    return MetricResult(value=value, n_items=len(scores), n_skipped=len(scores) - len(scored))
