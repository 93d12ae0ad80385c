"""Text normalisation, tokenisation, keywords and script shares."""

from __future__ import annotations

import pytest

from mella_assets.languages import REGISTRY
from mella_assets.lib.text import fold_serbian, keywords, normalize_text, script_of, stop_words, tokenize_words


def test_normalize_text_composes_strips_invisible_characters_and_collapses_whitespace():
    # z + combining caron -> ž (NFC); zero-width space, RLO bidi override and soft hyphen removed;
    # tab / newline / no-break space runs -> one space; ends stripped.
    raw = "  Praz\u030cský\u200b hrad\u202e\t\n v\u00a0\u00a0zi\u00admě \x07 "
    assert normalize_text(raw) == "Pražský hrad v zimě"


def test_normalize_text_of_blank_is_empty():
    assert normalize_text(" \u200b\u200f\n") == ""


def test_fold_serbian_transliterates_every_letter_and_digraph():
    assert fold_serbian("Љубав, Њива, Џак, ђак, ћуприја, шеширџија") == "Ljubav, Njiva, Džak, đak, ćuprija, šeširdžija"
    assert fold_serbian("Beograd") == "Beograd"


def test_regex_tokenizer_keeps_arabic_words_with_harakat_whole():
    assert tokenize_words("مُحَمَّد في القاهرة!", REGISTRY["ar"]) == ["مُحَمَّد", "في", "القاهرة"]


def test_thai_tokenizer_splits_unspaced_words():
    assert tokenize_words("ช้างไทยในป่า", REGISTRY["th"]) == ["ช้าง", "ไทย", "ใน", "ป่า"]


def test_korean_tokenizer_gives_morphemes():
    assert tokenize_words("공원에서 놀고", REGISTRY["ko"]) == ["공원", "에서", "놀", "고"]


def test_czech_keywords_drop_stop_words_numbers_punctuation_and_stem():
    assert keywords("Pražský hrad v zimě 2024, a hrad!", REGISTRY["cs"]) == ["pražsk", "hrad", "zim"]


def test_serbian_keywords_are_equal_in_both_scripts():
    sr = REGISTRY["sr"]
    assert keywords("Стара црква у селу", sr) == keywords("Stara crkva u selu", sr) == ["star", "crkv", "sel"]


def test_korean_keywords_keep_nouns_verb_stems_and_latin_words():
    assert keywords("서울에서 Samsung 휴대폰을 샀다 2024", REGISTRY["ko"]) == ["서울", "samsung", "휴대폰", "사"]


def test_vietnamese_keywords_without_stemmer_are_casefolded_syllables():
    # "vào" (into) is a stop word.
    assert keywords("Vịnh Hạ Long vào buổi sáng", REGISTRY["vi"]) == ["vịnh", "hạ", "long", "buổi", "sáng"]


def test_script_of_gives_letter_shares_per_script():
    shares = script_of("Ab Жд 서울 ไทย 中 1!")
    assert shares == {
        "Latn": 2 / 10,
        "Cyrl": 2 / 10,
        "Arab": 0.0,
        "Hang": 2 / 10,
        "Thai": 3 / 10,
        "Hani": 1 / 10,
        "other": 0.0,
    }
    assert set(script_of("123").values()) == {0.0}


@pytest.mark.parametrize("code", ["ar", "cs", "hu", "ko", "ru", "sr", "th", "vi"])
def test_every_language_has_a_stop_word_list_of_40_to_160_words(code):
    assert 40 <= len(stop_words(code)) <= 160
