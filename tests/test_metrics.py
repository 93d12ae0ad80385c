"""Metrics with hand-computed expectations."""

from __future__ import annotations

import random

import polars as pl
import pytest

from mella_assets.evaluation.metrics import (
    MetricResult,
    chrf,
    chrf_interval,
    chrf_statistics,
    corpus_keyword_accuracy,
    corpus_meteor,
    keyword_accuracy,
    mean_interval,
    meteor,
    paired_mean_delta_interval,
    sentence_chrf,
)
from mella_assets.evaluation.scoring import score_samples
from mella_assets.languages import REGISTRY, Language

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


# --- every language, hand-computed (keywords listed per case; stems are PyStemmer Snowball) ----------------------


@pytest.mark.parametrize(
    ("code", "reference", "hypothesis", "expected"),
    [
        # مسجد محمد عل(ي) قاهر(ة) ("في" is a stop word); hypothesis: قاهر, مسجد (و- prefix stemmed off), كبير → 2/4.
        ("ar", "مسجد محمد علي في القاهرة", "القاهرة ومسجد كبير", 0.5),
        # budapest, országház, tél ("A" stop word); "Budapesten" stems to budapest → 2/3.
        ("hu", "A budapesti Országház télen", "Az Országház Budapesten", 2 / 3),
        # красн, площад, москв, зим ("в" stop word) → площад, зим found: 2/4.
        ("ru", "Красная площадь в Москве зимой", "площадь зимой", 0.5),
        # No stemmer: syllables phở bò hà nội buổi sáng; hypothesis has phở, bò → 2/6.
        ("vi", "Phở bò Hà Nội buổi sáng", "một bát phở bò", 1 / 3),
        # Cyrillic reference folded to Latin: hram svet sav beograd ("у" stop word); Latin output has 3 of 4.
        ("sr", "Храм Светог Саве у Београду", "Hram Svetog Save", 0.75),
    ],
)
def test_keyword_accuracy_hand_computed_in_more_languages(code, reference, hypothesis, expected):
    assert keyword_accuracy(reference, hypothesis, REGISTRY[code]) == pytest.approx(expected, abs=1e-12)


# --- METEOR against NLTK on English --------------------------------------------------------------------------------

ENGLISH = Language(code="en", name="English", scripts=("Latn",), nllb_code="eng_Latn", stemmer="english")
ENGLISH_PAIRS = [
    # NLTK's own docstring example.
    (
        "It is a guide to action that ensures that the military will forever heed Party commands",
        "It is a guide to action which ensures that the military always obeys the commands of the party",
    ),
    ("the cat sat on the mat", "on the mat sat the cat"),
    ("the cats were sitting on the mats", "a cat sits on a mat"),
    ("running dogs chased the ball", "the dog runs after balls"),
    ("a quiet morning in the old town", "completely unrelated words here"),
]


@pytest.mark.parametrize(("reference", "hypothesis"), ENGLISH_PAIRS)
def test_meteor_equals_nltk_on_english_with_synonyms_off(reference, hypothesis):
    # Synonym matching is off on both sides (an empty WordNet): our METEOR has no synonym stage in any language.
    from nltk.stem.snowball import SnowballStemmer
    from nltk.translate.meteor_score import meteor_score

    class EmptyWordNet:
        def synsets(self, *args, **kwargs):
            return []

    expected = meteor_score(
        [reference.split()], hypothesis.split(), stemmer=SnowballStemmer("english"), wordnet=EmptyWordNet()
    )
    assert meteor(reference, hypothesis, ENGLISH) == expected


def test_meteor_stems_inflections_where_a_stemmer_exists_and_not_elsewhere():
    # Russian: "площади"/"площадь" share the stem площад → a full match (4 tokens, one chunk).
    assert meteor("Красная площадь зимой вечером", "Красная площади зимой вечером", REGISTRY["ru"]) == 0.9921875
    # Vietnamese has no stemmer: a different syllable is a miss. 3 of 4 match, P = R = 3/4, Fmean = 3/4,
    # one chunk of 3 → penalty 0.5 * (1/3)^3.
    expected = 0.75 * (1 - 0.5 / 27)
    assert meteor("phở bò Hà Nội", "phở bò Hà Tây", REGISTRY["vi"]) == pytest.approx(expected, abs=1e-12)


# --- edge cases and determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ar", "cs", "hu", "ko", "ru", "sr", "th", "vi"])
def test_empty_outputs_and_references_never_raise(code):
    language = REGISTRY[code]
    assert keyword_accuracy("", "", language) is None
    assert keyword_accuracy("", "text", language) is None
    assert meteor("", "", language) == 0.0
    assert corpus_meteor(["", ""], ["", "x"], language) == MetricResult(None, 2, 2)
    assert chrf([""], [""]) == 0.0
    assert sentence_chrf("", "x") == 0.0
    assert chrf([], []) == 0.0
    assert mean_interval([]) is None and mean_interval([None]) is None
    assert chrf_interval(chrf_statistics([], [])) is None


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    scores = [0.0, 0.25, 0.5, 0.75, 1.0, None]
    low, high = mean_interval(scores, seed=0)
    assert (low, high) == mean_interval(scores, seed=0)
    assert low < 0.5 < high and low >= 0.0 and high <= 1.0
    assert mean_interval([0.4] * 7) == (pytest.approx(0.4), pytest.approx(0.4))
    varied = [(i * 37 % 101) / 100 for i in range(30)]
    assert mean_interval(varied, seed=1) != mean_interval(varied, seed=0)


def test_paired_delta_interval_of_a_uniform_gain_is_that_gain():
    base = [0.1, 0.2, 0.3, None]
    better = [0.3, 0.4, 0.5, None]
    assert paired_mean_delta_interval(base, better) == (pytest.approx(0.2), pytest.approx(0.2))


def test_chrf_from_per_item_statistics_equals_sacrebleu_corpus_chrf():
    from sacrebleu.metrics import CHRF

    refs = ["Pražský hrad v zimě", "ช้างไทยในป่า", "서울의 밤"]
    hyps = ["Pražský hrad", "ช้างในป่า", "부산의 밤"]
    assert chrf(refs, hyps) == CHRF(word_order=0).corpus_score(hyps, [refs]).score
    low, high = chrf_interval(chrf_statistics(refs, hyps))
    assert low <= chrf(refs, hyps) <= high


def _random_text(rng: random.Random) -> str:
    alphabet = "abcdeščřžáéíАБВђјљабвгдمحمدالقاهرةไทยช้างป่า서울한복아이 .,!?0123456789"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def test_ten_thousand_random_items_score_without_error_and_identically_twice():
    rng = random.Random(20260101)
    codes = ["ar", "cs", "hu", "ko", "ru", "sr", "th", "vi"]
    items = [(codes[i % 8], _random_text(rng), _random_text(rng), i % 2 == 0) for i in range(10_000)]

    def run() -> list:
        samples = pl.DataFrame(
            {
                "id": [str(i) for i in range(len(items))],
                "language": [c for c, *_ in items],
                "source": ["know" if know else "ling" for *_, know in items],
                "reference": [r for _, r, _, _ in items],
                "output": [h for _, _, h, _ in items],
                "model": "finetuned",
                "model_version": "v",
            }
        )
        results = []
        for code in codes:
            part = samples.filter(pl.col("language") == code)
            scored, scores = score_samples(part, REGISTRY[code], n_resamples=50)
            results.append((scored.to_dicts(), scores.to_dicts()))
        return results

    first = run()
    assert first == run()
    assert sum(len(scored) for scored, _ in first) == 10_000
