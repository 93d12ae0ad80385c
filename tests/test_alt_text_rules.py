"""The pieces of the alt-text precision rules (issue 17) on their own: word units per language, the lexicon files,
credit stripping's limits, site names from titles and domains, the page-language gate."""

from __future__ import annotations

import pytest

from mella_assets.know.boilerplate import (
    BOILERPLATE_CLASSES,
    boilerplate_class,
    boilerplate_phrases,
    names_the_site,
    read_lexicon,
    registered_label,
    site_names_by_host,
    title_segments,
)
from mella_assets.know.credits import MAX_STRIP_CHARS, has_content_words, strip_credits
from mella_assets.know.filters import declared_mismatch
from mella_assets.languages import DEFAULT_LANGUAGE_CODES, REGISTRY
from mella_assets.lib.text import word_units


@pytest.mark.parametrize(
    ("code", "text", "units"),
    [
        ("cs", "Karlův most – 2024", 2),  # a dash and a year are no words
        ("cs", "Turisté na Karlově mostě v mlze", 6),
        ("ko", "단풍이 물든 설악산 풍경", 4),  # eojeol: a word with its particles
        ("ko", "섬네일 이미지", 2),
        ("th", "พระอาทิตย์ตกที่ชายหาดพัทยา", 5),  # newmm: พระอาทิตย์ ตก ที่ ชายหาด พัทยา
        ("th", "วัดไทย", 2),
        ("vi", "Hồ Gươm", 2),  # syllables (Vietnamese min_alt_words is 4)
        ("ar", "أطفال يلعبون على شاطئ غزة", 5),
    ],
)
def test_alt_text_length_is_counted_in_word_units_per_language(code, text, units):
    assert len(word_units(text, REGISTRY[code])) == units


def test_every_target_language_has_a_lexicon_with_every_boilerplate_class():
    for code in DEFAULT_LANGUAGE_CODES:
        assert read_lexicon(code), code
        assert set(boilerplate_phrases(code)) == set(BOILERPLATE_CLASSES), code


def test_a_lexicon_with_an_unknown_section_is_an_error(tmp_path, monkeypatch):
    import mella_assets.know.boilerplate as boilerplate

    (tmp_path / "lexicons").mkdir()
    (tmp_path / "lexicons" / "xx.txt").write_text("[socials]\nfacebook\n", encoding="utf-8")
    monkeypatch.setattr(boilerplate.resources, "files", lambda _package: tmp_path)
    boilerplate.read_lexicon.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"unknown section \[socials\]"):
            boilerplate.read_lexicon("xx")
    finally:
        boilerplate.read_lexicon.cache_clear()


def test_languages_without_a_lexicon_fall_back_to_their_registry_words():
    ukrainian = REGISTRY["uk"]
    assert boilerplate_class("Логотип", ukrainian) == "image_words"
    assert boilerplate_class("Facebook Twitter", ukrainian) == "social"  # the shared lexicon


def test_contact_data_is_no_credit_and_a_long_text_is_left_alone():
    assert strip_credits("Pište nám na info@hrad-karlstejn.cz") == "Pište nám na info@hrad-karlstejn.cz"
    assert strip_credits("Старое фото Москвы 1930-х годов") == "Старое фото Москвы 1930-х годов"  # no colon: a word
    assert strip_credits("Reuters reporters at work in Kyiv") == "Reuters reporters at work in Kyiv"  # not at the end
    long_text = "Hráči slaví gól. " * 70 + "Foto: ČTK"
    assert len(long_text) > MAX_STRIP_CHARS and strip_credits(long_text) == long_text


def test_capitals_only_text_counts_stop_words_as_content():
    russian = REGISTRY["ru"]
    assert has_content_words("ПРАЗДНИК В МОСКВЕ", russian)
    assert not has_content_words("ЦСКА СПАРТАК ЗЕНИТ", russian)


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("www.novinky.cz", "novinky"),
        ("www.yna.co.kr", "yna"),
        ("m.vnexpress.net", "vnexpress"),
        ("gate.ahram.org.eg", "ahram"),
        ("localhost", None),
        ("127.0.0.1", None),
    ],
)
def test_the_registered_domains_label(host, label):
    assert registered_label(host) == label


def test_site_names_come_from_recurring_title_ends_and_domain_like_segments():
    assert title_segments("Vláda schválila rozpočet | Novinky.cz") == ["Vláda schválila rozpočet", "Novinky.cz"]
    hosts = ["a.cz", "a.cz", "b.cz", "c.cz"]
    urls = ["https://a.cz/1", "https://a.cz/2", "https://b.cz/1", "https://c.cz/1"]
    titles = ["Praha - Zprávy A", "Brno - Zprávy A", "Krátce - dlouhý titulek o ničem", "Sport | Deník B"]
    assert site_names_by_host(hosts, urls, titles) == {"a.cz": {"Zprávy A"}, "c.cz": {"Deník B"}}


def test_an_alt_names_the_site_when_it_is_its_name_or_a_title_like_slogan():
    czech = REGISTRY["cs"]
    assert names_the_site("Novinky.cz – zprávy z domova", {"Novinky.cz"}, "novinky", czech)
    assert names_the_site("Novinky", set(), "novinky", czech)
    assert names_the_site("Index - Címlap", {"Index"}, "index", REGISTRY["hu"])
    assert names_the_site("الأهرام", {"بوابة الأهرام"}, "ahram", REGISTRY["ar"])  # a part of the site's name
    assert not names_the_site("Novinky z Pražského hradu dnes večer", set(), "novinky", czech)
    assert not names_the_site("Turisté na Karlově mostě v mlze", {"Novinky.cz"}, "novinky", czech)


@pytest.mark.parametrize(
    ("html_lang", "og_locale", "code", "mismatch"),
    [
        ("fr", None, "cs", True),
        ("sk-SK", None, "cs", True),
        (None, "de_DE", "ko", True),
        ("cs-CZ", None, "cs", False),
        ("en-US", None, "cs", False),  # a CMS default: the text decides
        ("cs", "fr_FR", "cs", False),  # mixed
        ("hr", None, "sr", False),  # a label of Serbian: the Serbian rules decide
        (None, None, "th", False),
    ],
)
def test_the_declared_page_language_gate(html_lang, og_locale, code, mismatch):
    assert declared_mismatch(html_lang, og_locale, REGISTRY[code]) is mismatch
