"""The page language prior: <html lang>, og:locale, then the national domain (lib/page_language.py)."""

from __future__ import annotations

import pytest

from mella_assets.languages import REGISTRY, load_languages
from mella_assets.lib.page_language import (
    PageLanguage,
    country_tld_table,
    host_language,
    language_tag_prefix,
    page_language,
    page_languages,
    with_site_priors,
)


@pytest.mark.parametrize(
    ("tag", "prefix"),
    [
        ("sr-Latn-RS", "sr"),
        ("sr_RS", "sr"),
        (" CS ", "cs"),
        ("fil-PH", "fil"),
        ("", None),
        (None, None),
        ("{{lang}}", None),
        ("x-default", None),
        ("und", None),
        ("zxx", None),
        ("mul", None),
        ("english", None),
        ("e", None),
    ],
)
def test_language_tag_prefix(tag, prefix):
    assert language_tag_prefix(tag) == prefix


@pytest.mark.parametrize(
    ("url", "language"),
    [
        ("https://www.rts.rs/page/stories/sr.html", "sr"),
        ("https://www.rts.rs./x", "sr"),  # fully qualified host
        ("http://xn--90a3ac.xn--90a3ac/", "sr"),  # .срб in punycode
        ("https://srbija.срб/", "sr"),
        ("https://www.index.hr/", "hr"),
        ("https://klix.ba/", "bs"),
        ("https://idnes.cz/", "cs"),
        ("https://xn--p1ai/", "ru"),  # .рф
        ("https://vnexpress.net/", None),
        ("https://example.com/", None),
        ("https://vijesti.me/", None),  # Montenegro: no single standard
        ("https://bbc.co.uk/", None),  # .uk is the United Kingdom, not Ukrainian
        ("https://[::1/", None),  # malformed
        ("", None),
        (None, None),
        ("www.index.hr", "hr"),  # a bare host
    ],
)
def test_host_language(url, language):
    assert host_language(url) == language


@pytest.mark.parametrize(
    ("html_lang", "og_locale", "url", "expected"),
    [
        ("sr-Latn", None, "https://a.hr/", PageLanguage("sr", "html_lang")),
        (None, "hr_HR", "https://a.rs/", PageLanguage("hr", "og_locale")),
        ("{{lang}}", "cs_CZ", "https://a.com/", PageLanguage("cs", "og_locale")),
        (None, None, "https://a.rs/", PageLanguage("sr", "tld")),
        ("en-US", None, "https://a.rs/", PageLanguage("sr", "tld")),
        ("en", "en_US", "https://a.com/", PageLanguage("en", "html_lang")),
        (None, "en_GB", "https://a.com/", PageLanguage("en", "og_locale")),
        (None, None, "https://a.com/", PageLanguage(None, None)),
        ("de", None, "https://a.cz/", PageLanguage("de", "html_lang")),  # a declared non-English language wins
    ],
)
def test_page_language(html_lang, og_locale, url, expected):
    assert page_language(html_lang, og_locale, url) == expected


def test_page_languages_matches_page_language_row_by_row():
    rows = [
        ("sr", None, "https://a.hr/1"),
        (None, None, "https://a.hr/2"),
        (None, None, "https://a.hr/3"),
        ("en", None, "https://b.com/"),
        (None, None, None),
        (None, None, "http://[::1/"),
    ]
    expected = [page_language(h, o, u) for h, o, u in rows]
    assert page_languages(*zip(*rows, strict=True)) == expected


def test_registry_domains_and_custom_languages():
    table = country_tld_table()
    for language in REGISTRY.values():
        for tld in language.country_tlds:
            assert table[tld] == language.code
    assert table["hr"] == "hr" and table["ba"] == "bs"
    assert "uk" not in table and "me" not in table and "com" not in table


def test_a_languages_file_can_name_domains(tmp_path):
    path = tmp_path / "languages.json"
    path.write_text(
        '[{"code": "lt", "name": "Lithuanian", "scripts": ["Latn"], "nllb_code": "lit_Latn", "country_tlds": ["lt"]}]',
        encoding="utf-8",
    )
    languages = load_languages("lt", str(path))
    assert languages["lt"].country_tlds == ("lt",)
    assert host_language("https://delfi.lt/", country_tld_table(languages.values())) == "lt"


def test_site_priors_fill_pages_without_a_signal_from_their_host():
    none = PageLanguage(None, None)
    priors = [
        PageLanguage("hr", "html_lang"),  # a.com/1
        PageLanguage("hr", "html_lang"),  # a.com/1 again: the page counts once
        PageLanguage("sr", "html_lang"),  # a.com/2
        PageLanguage("hr", "html_lang"),  # a.com/3
        none,  # a.com/4 -> hr by its site's pages
        none,  # b.com/1: no declaring page, text votes sr 2 : hr 1
        none,  # b.com/2
        none,  # b.com/3
        none,  # c.com/1: a tie of votes gives nothing
        none,  # c.com/2
        PageLanguage("sr", "tld"),  # d.rs/1 keeps its own
        none,  # no URL
    ]
    urls = [
        "https://a.com/1",
        "https://a.com/1",
        "https://a.com/2",
        "https://a.com/3",
        "https://a.com/4",
        "https://b.com/1",
        "https://b.com/2",
        "https://b.com/3",
        "https://c.com/1",
        "https://c.com/2",
        "https://d.rs/1",
        None,
    ]
    votes = [None, None, None, None, None, "sr", "sr", "hr", "sr", "hr", "hr", "sr"]
    out = with_site_priors(priors, urls, votes)
    assert out[:4] == priors[:4]
    assert out[4] == PageLanguage("hr", "site")
    assert out[5:8] == [PageLanguage("sr", "site_text")] * 3
    assert out[8:10] == [none, none]
    assert out[10] == PageLanguage("sr", "tld")
    assert out[11] == none
    assert with_site_priors(priors, urls)[5] == none  # no votes given: nothing from texts
