"""Metrics with hand-computed expectations (DESIGN §9)."""

from __future__ import annotations

import pytest

from mella_assets.languages import REGISTRY
from mella_assets.lib.metrics import (
    MetricResult,
    chrf,
    corpus_keyword_accuracy,
    corpus_meteor,
    keyword_accuracy,
    meteor,
)

CS, TH, KO, SR = REGISTRY["cs"], REGISTRY["th"], REGISTRY["ko"], REGISTRY["sr"]


def test_czech_keyword_accuracy_uses_stems():
    # Reference keywords (stop word "v" dropped, Czech Snowball stems): pražsk, hrad, zim.
    # Hypothesis keywords: hrad, praz ("Praze" stems to "praz", not "pražsk"). Found: hrad -> 1/3.
    assert keyword_accuracy("Pražský hrad v zimě", "hrad v Praze", CS) == pytest.approx(1 / 3)
    # Inflection is absorbed by the stemmer: "zimě" and "zima" both stem to "zim".
    assert keyword_accuracy("hrad v zimě", "Hrad, zima.", CS) == 1.0


def test_thai_keyword_accuracy_on_newmm_words():
    # Reference words ช้าง ไทย ใน ป่า ที่ เชียงใหม่; stop words ใน ที่ dropped -> 4 keywords.
    # Hypothesis keywords ช้าง เชียงใหม่ -> 2 of 4 found.
    assert keyword_accuracy("ช้างไทยในป่าที่เชียงใหม่", "ช้างในเชียงใหม่", TH) == 0.5


def test_korean_keyword_accuracy_on_content_morphemes():
    # Reference content morphemes: 한복 입 아이 공원 놀 (particles, endings, 있 dropped) -> 5.
    # Hypothesis "공원에서 노는 아이들": 공원 놀 아이 -> 3 of 5.
    assert keyword_accuracy("한복을 입은 아이들이 공원에서 놀고 있다", "공원에서 노는 아이들", KO) == 0.6


def test_serbian_cyrillic_reference_matches_latin_hypothesis():
    assert keyword_accuracy("Београдска тврђава на Калемегдану", "Beogradska tvrđava na Kalemegdanu", SR) == 1.0


def test_reference_of_only_stop_words_is_skipped_and_counted():
    assert keyword_accuracy("a to je", "hrad", CS) is None
    result = corpus_keyword_accuracy(["a to je", "Pražský hrad v zimě"], ["hrad", "hrad v Praze"], CS)
    assert result == MetricResult(value=pytest.approx(1 / 3), n_items=2, n_skipped=1)


def test_corpus_keyword_accuracy_of_nothing_scorable_is_none():
    assert corpus_keyword_accuracy(["a to je"], ["hrad"], CS) == MetricResult(None, 1, 1)


def test_meteor_of_identical_four_tokens():
    # P = R = 1 -> Fmean = 1; one chunk of 4 matches -> penalty 0.5 * (1/4)^3 = 0.0078125; 1 - 0.0078125.
    assert meteor("Pražský hrad v zimě", "Pražský hrad v zimě", CS) == 0.9921875


def test_meteor_partial_match_hand_computed():
    # Matches: hrad, v (exact); praze/pražský and zimě have no stem match. m = 2, P = 2/3, R = 2/4.
    # Fmean = P*R / (0.9*P + 0.1*R) = (1/3) / 0.65; the 2 matches are one chunk: penalty 0.5 * (1/2)^3.
    expected = (1 / 3) / 0.65 * (1 - 0.0625)
    assert meteor("Pražský hrad v zimě", "hrad v Praze", CS) == pytest.approx(expected, abs=1e-12)


def test_meteor_matches_serbian_across_scripts():
    assert meteor("Београдска тврђава на Калемегдану", "Beogradska tvrđava na Kalemegdanu", SR) == 0.9921875


def test_meteor_without_overlap_or_hypothesis_is_zero():
    assert meteor("Pražský hrad v zimě", "Karlův most", CS) == 0.0
    assert meteor("Pražský hrad v zimě", "", CS) == 0.0


def test_corpus_meteor_is_the_mean_and_skips_empty_references():
    result = corpus_meteor(["Pražský hrad v zimě", "Karlův most", ""], ["Pražský hrad v zimě", "hrad", "x"], CS)
    assert result == MetricResult(value=0.9921875 / 2, n_items=3, n_skipped=1)


def test_chrf_identical_is_100_and_empty_hypothesis_is_0():
    assert chrf(["Pražský hrad v zimě", "ช้างไทย"], ["Pražský hrad v zimě", "ช้างไทย"]) == 100.0
    assert chrf(["Pražský hrad v zimě"], [""]) == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        chrf(["a", "b"], ["a"])
