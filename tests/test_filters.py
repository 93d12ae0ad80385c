"""Alt-text filters: exact reasons in a fixed order, stable schemas, per-language length rules."""

from __future__ import annotations

import polars as pl
import pytest

from mella_assets.know.filters import REASONS, FilterConfig, counts_by_reason, filter_alt_texts, is_boilerplate
from mella_assets.languages import REGISTRY
from mella_assets.lib.langid import LanguageIdentifier

CZECH = REGISTRY["cs"]
GOOD_CZECH = "Pražský hrad v zimě pokrytý sněhem"


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier("lingua")


def frame(
    alts: list[str | None], image_urls: list[str] | None = None, html_lang: str | None = "cs", host: str = "example.cz"
) -> pl.DataFrame:
    n = len(alts)
    return pl.DataFrame(
        {
            "page_url": [f"https://{host}/page/{i}" for i in range(n)],
            "domain": [host] * n,
            "image_url": image_urls or [f"https://{host}/img/{i}.jpg" for i in range(n)],
            "alt_raw": alts,
            "html_lang": [html_lang] * n,
            "crawl_id": list(range(n)),  # an extra column that must be carried through
        },
        schema_overrides={"alt_raw": pl.String, "html_lang": pl.String},
    )


def test_one_candidate_per_reason_keeps_only_the_good_czech_alt(identifier):
    cases = [
        (None, "missing_alt"),
        (" \u200b\t ", "empty_alt"),
        ("Karlův most v mlze", "unsupported_image_url"),  # its image_url is a data: URL below
        ("https://example.cz/foto/hrad.jpg", "alt_is_url"),
        ("IMG_2041.jpg", "alt_is_filename"),
        ("Pište nám na info@hrad-karlstejn.cz", "alt_has_email"),
        ("Rezervace stolu: +420 602 123 456", "alt_has_phone"),
        ("12.5.", "alt_number_only"),
        ("Úžasnýýýýýý hrad!!!!!!", "alt_repeated_chars"),
        ("Logo Facebook", "alt_boilerplate"),
        ("Hrad", "alt_too_short"),
        ("Hrad nad řekou " * 20, "alt_too_long"),
        ("Bratislavský hrad pri západe slnka", "wrong_language"),
        ("Hrad na kopci", "language_uncertain"),  # lingua: sk 0.133 vs cs 0.127; no page language (.com, no lang)
        (GOOD_CZECH, None),
        (GOOD_CZECH, "duplicate_pair"),
    ]
    alts = [alt for alt, _ in cases]
    urls = [f"https://example.cz/img/{i}.jpg" for i in range(len(cases))]
    urls[2] = "data:image/png;base64,iVBORw0KGgo="
    urls[-1] = urls[-2]  # same image, same alt after normalisation -> duplicate
    result = filter_alt_texts(frame(alts, urls, html_lang=None, host="example.com"), CZECH, identifier)

    assert result.kept["alt_text"].to_list() == [GOOD_CZECH]
    assert result.kept["crawl_id"].to_list() == [14]
    assert result.kept["detected_language"].to_list() == ["cs"]
    assert result.kept["language"].to_list() == ["cs"]
    assert result.rejects["reason"].to_list() == [reason for _, reason in cases if reason]
    assert result.rejects["reason"].to_list() == list(REASONS)
    assert result.rejects["alt_text"].to_list()[:3] == [None, "", "Karlův most v mlze"]


def test_output_columns_are_input_plus_documented_ones(identifier):
    result = filter_alt_texts(frame([GOOD_CZECH, None]), CZECH, identifier)
    base = ["page_url", "domain", "image_url", "alt_raw", "html_lang", "crawl_id"]
    kept_extra = ["alt_text", "page_language", "detected_language", "language_confidence", "language"]
    assert result.kept.columns == [*base, *kept_extra]
    assert result.rejects.columns == [*base, "alt_text", "page_language", "reason", "language"]


def test_empty_input_gives_empty_frames_with_the_same_schemas(identifier):
    full = filter_alt_texts(frame([GOOD_CZECH, None]), CZECH, identifier)
    empty = filter_alt_texts(frame([GOOD_CZECH, None]).head(0), CZECH, identifier)
    assert empty.kept.height == empty.rejects.height == 0
    assert empty.kept.schema == full.kept.schema
    assert empty.rejects.schema == full.rejects.schema
    assert counts_by_reason(empty.rejects) == {}


def test_all_null_alt_column_still_has_string_schema(identifier):
    result = filter_alt_texts(frame([None, None]).with_columns(pl.lit(None).alias("alt_raw")), CZECH, identifier)
    assert result.rejects.schema["alt_raw"] == pl.String
    assert result.rejects["reason"].to_list() == ["missing_alt", "missing_alt"]


def test_page_language_settles_a_czech_slovak_close_call(identifier):
    result = filter_alt_texts(frame(["Hrad na kopci"], html_lang="cs-CZ"), CZECH, identifier)
    assert result.kept["alt_text"].to_list() == ["Hrad na kopci"]


def test_national_domain_settles_the_close_call_when_the_page_declares_nothing(identifier):
    result = filter_alt_texts(frame(["Hrad na kopci"], html_lang=None), CZECH, identifier)
    assert result.kept["alt_text"].to_list() == ["Hrad na kopci"]
    assert result.kept["page_language"].to_list() == ["cs"]
    elsewhere = filter_alt_texts(frame(["Hrad na kopci"], html_lang=None, host="example.com"), CZECH, identifier)
    assert elsewhere.rejects["reason"].to_list() == ["language_uncertain"]
    assert elsewhere.rejects["page_language"].to_list() == [None]


# Valid Serbian, Croatian and Bosnian alike: only where it was published tells them apart.
SHARED_SERBO_CROATIAN = "Pršut i paški sir na drvenoj dasci"


@pytest.mark.parametrize(
    ("html_lang", "og_locale", "host", "page_language", "reason"),
    [
        (None, None, "kuhinja.hr", "hr", "wrong_language"),
        (None, None, "kuhinja.rs", "sr", None),
        (None, None, "xn--90a3ac.xn--90a3ac", "sr", None),  # .срб
        (None, None, "kuhinja.ba", "bs", "wrong_language"),
        ("en-US", None, "kuhinja.hr", "hr", "wrong_language"),  # a CMS default says less than the domain
        ("hr-HR", None, "kuhinja.com", "hr", "wrong_language"),
        (None, "hr_HR", "kuhinja.com", "hr", "wrong_language"),
        ("sr-Latn-RS", "hr_HR", "kuhinja.hr", "sr", None),  # <html lang> first
        (None, None, "kuhinja.com", None, None),  # nothing known: accept_undecided_serbian (default keep)
    ],
)
def test_page_signals_settle_text_valid_in_serbian_croatian_and_bosnian(
    identifier, html_lang, og_locale, host, page_language, reason
):
    candidates = frame([SHARED_SERBO_CROATIAN], html_lang=html_lang, host=host).with_columns(
        pl.lit(og_locale, dtype=pl.String).alias("og_locale")
    )
    result = filter_alt_texts(candidates, REGISTRY["sr"], identifier)
    if reason is None:
        assert result.kept["page_language"].to_list() == [page_language]
        assert result.rejects.height == 0
    else:
        assert result.rejects["reason"].to_list() == [reason]
        assert result.rejects["page_language"].to_list() == [page_language]


def test_a_page_without_signals_takes_its_sites_language(identifier):
    def site(alts: list[str], langs: list[str | None]) -> pl.DataFrame:
        n = len(alts)
        return pl.DataFrame(
            {
                "page_url": [f"https://galerija.com/{i}" for i in range(n)],
                "image_url": [f"https://galerija.com/{i}.jpg" for i in range(n)],
                "alt_raw": alts,
                "html_lang": langs,
            },
            schema_overrides={"html_lang": pl.String},
        )

    serbian = REGISTRY["sr"]
    # Other pages of the host declare Croatian: the undecided alt on the page without lang follows them.
    declared = filter_alt_texts(site([SHARED_SERBO_CROATIAN, "Stari grad"], [None, "hr"]), serbian, identifier)
    assert declared.rejects.filter(pl.col("alt_text") == SHARED_SERBO_CROATIAN)["reason"].to_list() == [
        "wrong_language"
    ]
    # Nothing declared anywhere: the site's other alt texts are ijekavian, so the site is not Serbian ...
    ijekavian = site([SHARED_SERBO_CROATIAN, "Djeca se kupaju u rijeci"], [None, None])
    assert filter_alt_texts(ijekavian, serbian, identifier).kept.height == 0
    # ... and ekavian ones make it Serbian.
    ekavian = site([SHARED_SERBO_CROATIAN, "Deca se kupaju u reci posle podne"], [None, None])
    kept = filter_alt_texts(ekavian, serbian, identifier).kept
    assert kept["alt_text"].to_list() == [SHARED_SERBO_CROATIAN, "Deca se kupaju u reci posle podne"]
    assert kept["page_language"].to_list() == ["sr", "sr"]


def test_thai_needs_five_characters_and_no_second_word(identifier):
    # "วัดไทย" is 6 code points (ว ั ด ไ ท ย), "วัด" is 3; Thai has no spaces so the 2-word rule does not apply.
    result = filter_alt_texts(frame(["วัดไทย", "วัด"], html_lang="th"), REGISTRY["th"], identifier)
    assert result.kept["alt_text"].to_list() == ["วัดไทย"]
    assert result.rejects["reason"].to_list() == ["alt_too_short"]


def test_korean_needs_four_characters(identifier):
    result = filter_alt_texts(frame(["가을 풍경", "풍경"], html_lang="ko"), REGISTRY["ko"], identifier)
    assert result.kept["alt_text"].to_list() == ["가을 풍경"]
    assert result.rejects["reason"].to_list() == ["alt_too_short"]


def test_serbian_latin_and_cyrillic_alts_are_kept_for_serbian(identifier):
    alts = ["Beogradska tvrđava na Kalemegdanu", "Београдска тврђава на Калемегдану"]
    result = filter_alt_texts(frame(alts, html_lang=None), REGISTRY["sr"], identifier)
    assert result.kept["alt_text"].to_list() == alts
    assert result.kept["detected_language"].to_list()[1] == "sr"
    assert result.rejects.height == 0


def test_normalisation_makes_visually_equal_alts_duplicates(identifier):
    # Decomposed "ž" (z + combining caron) and a double space normalise to the first alt.
    alts = [GOOD_CZECH, "Praz\u030cský hrad  v zimě pokrytý sněhem"]
    result = filter_alt_texts(frame(alts, ["https://example.cz/a.jpg"] * 2), CZECH, identifier)
    assert result.kept["alt_text"].to_list() == [GOOD_CZECH]
    assert result.rejects["reason"].to_list() == ["duplicate_pair"]


def test_same_alt_on_different_images_is_kept_twice(identifier):
    result = filter_alt_texts(frame([GOOD_CZECH, GOOD_CZECH]), CZECH, identifier)
    assert result.kept.height == 2


@pytest.mark.parametrize(
    ("alt", "expected"),
    [
        ("logo", True),
        ("Logo of the company", True),
        ("ikona košíku", True),
        ("banner 2024", True),
        ("Ikona svaté Anny v kostele sv. Jakuba", False),  # a religious icon: real content after the word
        ("Fotografie Karlova mostu", False),
    ],
)
def test_boilerplate_is_furniture_words_with_at_most_one_other_word(alt, expected):
    assert is_boilerplate(alt, CZECH) is expected


def test_counts_by_reason_are_sorted_by_reason(identifier):
    result = filter_alt_texts(frame(["2024", None, "IMG_1.png", "2025"]), CZECH, identifier)
    assert counts_by_reason(result.rejects) == {"alt_is_filename": 1, "alt_number_only": 2, "missing_alt": 1}
    assert list(counts_by_reason(result.rejects)) == ["alt_is_filename", "alt_number_only", "missing_alt"]


@pytest.mark.parametrize(
    ("alt", "reason"),
    [
        ("hahahahahaha Praha", "alt_repeated_chars"),
        ("Sooooooo krásný výhled", "alt_repeated_chars"),
        ("Hrad Bouzov v roce 1999 a 2024", None),  # years are not a phone number
        ("Pivovar, Praha 1, tel. 224 812 345", "alt_has_phone"),
        ("Pražský hrad, vstupné 1 250 Kč, otevřeno 9.00–17.00", None),
        ("Kontakt: jan.novak@seznam.cz", "alt_has_email"),
    ],
)
def test_spam_and_pii_rules(identifier, alt, reason):
    result = filter_alt_texts(frame([alt]), CZECH, identifier)
    assert (result.rejects["reason"].to_list() or [None]) == [reason]


def test_pii_can_be_redacted_instead_of_rejected(identifier):
    config = FilterConfig(pii="redact")
    result = filter_alt_texts(frame(["Pražský hrad v zimě, info@hrad.cz, +420 224 373 368"]), CZECH, identifier, config)
    assert result.kept["alt_text"].to_list() == ["Pražský hrad v zimě, ,"]


def test_thresholds_are_configuration(identifier):
    alts = ["Hrad v mlze", "Pražský hrad v zimě pokrytý sněhem"]
    default = filter_alt_texts(frame(alts), CZECH, identifier)
    strict = filter_alt_texts(frame(alts), CZECH, identifier, FilterConfig(min_chars={"cs": 12}, max_chars={"cs": 30}))
    assert default.rejects["reason"].to_list() == []
    assert strict.rejects["reason"].to_list() == ["alt_too_short", "alt_too_long"]
    floor = filter_alt_texts(frame(alts), CZECH, identifier, FilterConfig(min_confidence={"cs": 1.01}))
    assert floor.rejects["reason"].to_list() == ["language_uncertain", "language_uncertain"]
