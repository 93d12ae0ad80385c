"""Alt-text filters: exact reasons in a fixed order, stable schemas, per-language length rules."""

from __future__ import annotations

import zlib

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
        ("Foto: ČTK / Michal Kamaryt", "alt_credit_only"),
        ("Karlův most v mlze", "unsupported_image_url"),  # its image_url is a data: URL below
        ("https://example.cz/foto/hrad.jpg", "alt_is_url"),
        ("IMG_2041.jpg", "alt_is_filename"),
        ("Pište nám na info@hrad-karlstejn.cz", "alt_has_email"),
        ("Rezervace stolu: +420 602 123 456", "alt_has_phone"),
        ("12.5.", "alt_number_only"),
        ("Úžasnýýýýýý hrad!!!!!!", "alt_repeated_chars"),
        ("Logo Facebook", "alt_boilerplate"),
        ("Example.com", "alt_site_name"),  # the page's own domain
        ("Hrad", "alt_too_short"),
        ("Hrad nad řekou " * 20, "alt_too_long"),
        ("Le château de Prague sous la neige", "page_language_mismatch"),  # its page declares French below
        ("Bratislavský hrad pri západe slnka", "wrong_language"),
        ("Hrad na kopci", "language_uncertain"),  # lingua: sk 0.133 vs cs 0.127; no page language (.com, no lang)
        ("Tomáš Garrigue Masaryk a Edvard Beneš", "alt_names_only"),
        (GOOD_CZECH, None),
        (GOOD_CZECH, "duplicate_pair"),
    ]
    alts = [alt for alt, _ in cases]
    urls = [f"https://example.cz/img/{i}.jpg" for i in range(len(cases))]
    urls[3] = "data:image/png;base64,iVBORw0KGgo="
    urls[-1] = urls[-2]  # same image, same alt after normalisation -> duplicate
    candidates = frame(alts, urls, html_lang=None, host="example.com").with_columns(
        pl.when(pl.col("alt_raw").str.starts_with("Le château")).then(pl.lit("fr-FR")).alias("html_lang")
    )
    result = filter_alt_texts(candidates, CZECH, identifier)

    assert result.kept["alt_text"].to_list() == [GOOD_CZECH]
    assert result.kept["crawl_id"].to_list() == [18]
    assert result.kept["detected_language"].to_list() == ["cs"]
    assert result.kept["language"].to_list() == ["cs"]
    assert result.rejects["reason"].to_list() == [reason for _, reason in cases if reason]
    # Every reason but the one that needs several pages of a site (test_site_furniture_...).
    assert result.rejects["reason"].to_list() == [reason for reason in REASONS if reason != "alt_site_repeated"]
    assert result.rejects["alt_text"].to_list()[:4] == [None, "", "", "Karlův most v mlze"]


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


def test_thai_length_is_counted_in_newmm_words(identifier):
    # Thai has no spaces: "วัดไทย" is two newmm words (วัด ไทย), a label; the sunset caption is five.
    alts = ["พระอาทิตย์ตกที่ชายหาดพัทยา", "วัดไทย", "วัด"]
    result = filter_alt_texts(frame(alts, html_lang="th"), REGISTRY["th"], identifier)
    assert result.kept["alt_text"].to_list() == ["พระอาทิตย์ตกที่ชายหาดพัทยา"]
    assert result.rejects["reason"].to_list() == ["alt_too_short", "alt_too_short"]


def test_korean_length_is_counted_in_eojeol(identifier):
    # Two eojeol ("autumn landscape") is a label; four characters are still the floor below that.
    alts = ["단풍이 물든 설악산 풍경", "가을 풍경", "풍경"]
    result = filter_alt_texts(frame(alts, html_lang="ko"), REGISTRY["ko"], identifier)
    assert result.kept["alt_text"].to_list() == ["단풍이 물든 설악산 풍경"]
    assert result.rejects["reason"].to_list() == ["alt_too_short", "alt_too_short"]


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


def _site(alts_by_page: list[list[str]], host: str = "www.example.cz", **page_fields) -> pl.DataFrame:
    """One row per (page, alt): page i of the host carries the alts of alts_by_page[i]; an alt's image is the same
    on every page (a logo, a teaser)."""
    records = [
        {
            "page_url": f"https://{host}/clanek/{page}",
            "domain": host,
            "image_url": f"https://{host}/img/{zlib.crc32(alt.encode())}.jpg",
            "alt_raw": alt,
            "html_lang": "cs",
            **page_fields,
        }
        for page, alts in enumerate(alts_by_page)
        for alt in alts
    ]
    return pl.DataFrame(records, schema_overrides={"html_lang": pl.String})


def test_site_furniture_on_most_pages_is_rejected_but_a_teaser_on_a_few_is_kept_once(identifier):
    promo = "Přihlaste se k odběru našeho týdenního newsletteru"
    teaser = "Vláda schválila zvýšení platů učitelů od září"
    pages = [[promo, f"Turisté na Karlově mostě v mlze číslo {i}"] for i in range(6)]
    pages[0].append(teaser)
    pages[3].append(teaser)
    result = filter_alt_texts(_site(pages), CZECH, identifier)
    reasons = result.rejects.group_by("alt_text", maintain_order=True).agg("reason")
    assert dict(zip(reasons["alt_text"], reasons["reason"].to_list(), strict=True)) == {
        promo: ["alt_site_repeated"] * 6,
        teaser: ["duplicate_pair"],  # the same teaser image and alt on a second page: kept once
    }
    assert result.kept.filter(pl.col("alt_text") == teaser).height == 1
    # Below the share (4 of 10 pages) the promo is not furniture any more: kept once per image.
    sparse = [[promo] if i < 4 else [f"Rybáři vylovují kapry z rybníka číslo {i}"] for i in range(10)]
    assert filter_alt_texts(_site(sparse), CZECH, identifier).kept.filter(pl.col("alt_text") == promo).height == 1


def test_the_sites_own_name_from_og_site_name_title_or_domain_is_rejected(identifier):
    alts = ["Hrady a zámky – průvodce po památkách", "Logo Novinky", "Novinky", "Novinky z Pražského hradu dnes večer"]
    candidates = _site([[alt] for alt in alts], host="www.novinky.cz", site_name="Hrady a zámky", title="Domov | X")
    result = filter_alt_texts(candidates, CZECH, identifier)
    assert result.rejects["reason"].to_list() == ["alt_site_name", "alt_boilerplate", "alt_site_name"]
    assert result.kept["alt_text"].to_list() == ["Novinky z Pražského hradu dnes večer"]  # the label amid content
    titled = _site([["Zprávy Jihočeského kraje – Deník"]], host="www.denik.cz", title="Jihočeský kraj | Deník.cz")
    assert filter_alt_texts(titled, CZECH, identifier).kept.height == 1  # "Deník" alone is not "Deník.cz"
    named = _site([["Deník.cz – regionální zprávy"]], host="www.denik.cz", title="Jihočeský kraj | Deník.cz")
    assert filter_alt_texts(named, CZECH, identifier).rejects["reason"].to_list() == ["alt_site_name"]


@pytest.mark.parametrize(
    ("html_lang", "og_locale", "gate", "reason"),
    [
        ("fr-FR", None, True, "page_language_mismatch"),  # declared French: the page wins over the text
        (None, "fr_FR", True, "page_language_mismatch"),
        ("en-US", None, True, None),  # an unchanged CMS default: the text decides
        ("cs", "fr_FR", True, None),  # two declarations that disagree: mixed, the text decides
        (None, None, True, None),  # silent
        ("fr-FR", None, False, None),  # the gate switched off
    ],
)
def test_a_page_declaring_another_language_rejects_whatever_the_text_says(
    identifier, html_lang, og_locale, gate, reason
):
    candidates = frame([GOOD_CZECH], html_lang=html_lang).with_columns(
        pl.lit(og_locale, dtype=pl.String).alias("og_locale")
    )
    result = filter_alt_texts(candidates, CZECH, identifier, FilterConfig(page_language_gate=gate))
    assert (result.rejects["reason"].to_list() or [None]) == [reason]


def test_a_french_caption_on_a_french_page_is_not_kept_for_czech(identifier):
    result = filter_alt_texts(frame(["Le pont Charles sous la neige à Prague"], html_lang="fr"), CZECH, identifier)
    assert result.rejects["reason"].to_list() == ["page_language_mismatch"]


def test_a_russian_caption_with_an_english_league_name_is_kept(identifier):
    alt = "Игрок «Спартака» забивает гол в матче UEFA Champions League"
    result = filter_alt_texts(frame([alt], html_lang="ru", host="sport.ru"), REGISTRY["ru"], identifier)
    assert result.kept["alt_text"].to_list() == [alt]


def test_a_korean_caption_ending_in_the_reporters_email_is_kept_without_it(identifier):
    alt = (
        "(서울=연합뉴스) 김주형 기자 = 광화문광장에서 열린 집회 참가자들이 행진하고 있다. 2024.5.27 kjhpress@yna.co.kr"
    )
    result = filter_alt_texts(frame([alt], html_lang="ko", host="yna.co.kr"), REGISTRY["ko"], identifier)
    assert result.kept["alt_text"].to_list() == ["광화문광장에서 열린 집회 참가자들이 행진하고 있다."]
    assert result.kept["alt_raw"].to_list() == [alt]


def test_names_and_a_credit_are_not_russian(identifier):
    alts = ["Эрлинг Холанд, Getty Images", "Игорь Акинфеев, Георгий Джикия, Марио Фернандес"]
    result = filter_alt_texts(frame(alts, html_lang="ru", host="sport.ru"), REGISTRY["ru"], identifier)
    assert result.rejects["reason"].to_list() == ["alt_too_short", "alt_names_only"]
    assert result.rejects["alt_text"].to_list()[0] == "Эрлинг Холанд"


def test_credit_stripping_and_word_floor_are_configuration(identifier):
    alt = "Hráči Sparty slaví gól. Foto: ČTK / Michal Kamaryt"
    kept = filter_alt_texts(frame([alt]), CZECH, identifier).kept
    assert kept["alt_text"].to_list() == ["Hráči Sparty slaví gól."]
    raw = filter_alt_texts(frame([alt]), CZECH, identifier, FilterConfig(strip_credits=False)).kept
    assert raw["alt_text"].to_list() == [alt]
    strict = filter_alt_texts(frame(["Hrad v mlze"]), CZECH, identifier, FilterConfig(min_words={"cs": 4}))
    assert strict.rejects["reason"].to_list() == ["alt_too_short"]
