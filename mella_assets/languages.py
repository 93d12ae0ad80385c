"""The language registry (Dagster-free; the partitions built from it are in ``partitions.py``).

The eight languages of the MELLA paper are the default. A deployment picks its own list with
``MELLA_LANGUAGES`` (comma-separated codes, e.g. ``ar,cs,uk``) and may describe languages the registry does not
know in a JSON file named by ``MELLA_LANGUAGES_FILE`` (a list of objects with the fields of :class:`Language`).
The list is read when the code location loads, so the partitions shown in the UI always match it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from mella_assets.settings import load_settings

DEFAULT_LANGUAGE_CODES: tuple[str, ...] = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")


@dataclass(frozen=True)
class Language:
    """Facts the pipeline needs about one language."""

    code: str  # ISO 639-1
    name: str  # English name
    scripts: tuple[str, ...]  # ISO 15924 scripts the language is written in, preferred first
    nllb_code: str  # NLLB-200 / FLORES-200 code the translator targets
    word_tokenizer: str = "regex"  # "regex", "pythainlp" (no spaces between words) or "kiwi" (Korean morphemes)
    stemmer: str | None = None  # PyStemmer algorithm name, None where Snowball has none
    # Language-ID labels (ISO 639-1) that count as this language. Serbian in Latin script is read as Croatian or
    # Bosnian by every detector we measured (benchmarks/bench_langid.py), so those labels count as Serbian *for sr
    # only*.
    langid_labels: tuple[str, ...] = ()
    # Languages a short text of this one is most easily mistaken for (or vice versa). The language-ID cascade always
    # offers them to lingua when the fast detector (CLD2) does not settle a text.
    langid_relatives: tuple[str, ...] = ()
    # Scripts in which a reliable CLD2 answer of this language may accept a text without lingua (None: all of
    # them; CLD2's rejections count in every script). Not Serbian Cyrillic: CLD2 reads short Macedonian as Serbian.
    langid_fast_accept_scripts: tuple[str, ...] | None = None
    # Alt-text length bounds in characters. Hangul syllables and Thai (no spaces) pack more meaning per
    # character than Latin or Cyrillic, so their bounds are lower.
    min_alt_chars: int = 8
    max_alt_chars: int = 250
    # Fewest word units an alt text needs (lib/text.py ``word_units``: whitespace words, Korean eojeol, Thai newmm
    # words): one- and two-word alt texts are almost always labels ("Facebook", "섬네일 이미지", "Karlův most").
    # Vietnamese writes every syllable apart, so its words are counted in syllables.
    min_alt_words: int = 3
    # Words that mark an alt text as page furniture rather than a description (matched case-insensitively as
    # whole words; the English ones are checked for every language).
    boilerplate_words: tuple[str, ...] = ()
    # Native-script characters that only this language uses among the configured ones (a cheap, exact prior).
    marker_chars: str = ""
    # Country-code top-level domains (Unicode form) whose sites are mostly in this language: the page prior when
    # a page declares no language (lib/page_language.py). Only countries with one dominant standard.
    country_tlds: tuple[str, ...] = ()
    # ISO 639-3 codes that Common Crawl's index gives this language's pages (``content_languages``, CLD2 labels),
    # own code first: how page selection (crawl/cc_index.py) finds the language's pages.
    iso639_3: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """Language-ID labels accepted for this language, its own code first."""
        return (self.code, *[label for label in self.langid_labels if label != self.code])


REGISTRY: dict[str, Language] = {
    language.code: language
    for language in [
        Language(
            code="ar",
            iso639_3=("ara",),
            name="Arabic",
            scripts=("Arab",),
            nllb_code="arb_Arab",
            country_tlds=(
                "sa",
                "eg",
                "ae",
                "ma",
                "dz",
                "tn",
                "iq",
                "jo",
                "sy",
                "lb",
                "kw",
                "qa",
                "bh",
                "om",
                "ye",
                "ly",
                "sd",
                "ps",
                "مصر",
                "السعودية",
                "امارات",
            ),
            stemmer="arabic",
            langid_relatives=("fa", "ur"),
            min_alt_chars=6,
            boilerplate_words=("شعار", "أيقونة", "لافتة", "إعلان", "صورة رمزية", "زر"),
        ),
        Language(
            code="cs",
            iso639_3=("ces",),
            name="Czech",
            scripts=("Latn",),
            nllb_code="ces_Latn",
            country_tlds=("cz",),
            stemmer="czech",
            langid_relatives=("sk", "pl", "sl", "hr"),
            boilerplate_words=("logo", "ikona", "ikonka", "banner", "reklama", "avatar", "tlačítko"),
            marker_chars="ěůřťď",
        ),
        Language(
            code="hu",
            iso639_3=("hun",),
            name="Hungarian",
            scripts=("Latn",),
            nllb_code="hun_Latn",
            country_tlds=("hu",),
            stemmer="hungarian",
            boilerplate_words=("logó", "logo", "ikon", "banner", "reklám", "hirdetés", "avatar", "gomb"),
            marker_chars="őű",
        ),
        Language(
            code="ko",
            iso639_3=("kor",),
            name="Korean",
            scripts=("Hang",),
            nllb_code="kor_Hang",
            country_tlds=("kr", "한국"),
            word_tokenizer="kiwi",
            min_alt_chars=4,
            max_alt_chars=150,
            boilerplate_words=("로고", "아이콘", "배너", "광고", "버튼", "프로필"),
        ),
        Language(
            code="ru",
            iso639_3=("rus",),
            name="Russian",
            scripts=("Cyrl",),
            nllb_code="rus_Cyrl",
            country_tlds=("ru", "рф"),
            stemmer="russian",
            langid_relatives=("uk", "be", "bg", "mk", "sr"),
            boilerplate_words=(
                "логотип",
                "лого",
                "иконка",
                "значок",
                "баннер",
                "реклама",
                "аватар",
                "кнопка",
            ),
            marker_chars="ыэъё",
        ),
        Language(
            code="sr",
            iso639_3=("srp", "hbs"),  # hbs: the Serbo-Croatian macrolanguage code
            name="Serbian",
            scripts=("Cyrl", "Latn"),
            nllb_code="srp_Cyrl",  # NLLB has no Latin-script Serbian: translate to Cyrillic, transliterate
            country_tlds=("rs", "срб"),
            stemmer="serbian",
            langid_labels=("hr", "bs"),
            langid_relatives=("mk", "bg", "ru", "uk", "sl"),
            langid_fast_accept_scripts=("Latn",),
            boilerplate_words=(
                "логотип",
                "лого",
                "logo",
                "икона",
                "ikona",
                "банер",
                "baner",
                "реклама",
                "reklama",
            ),
            marker_chars="ђјљњћџ",
        ),
        Language(
            code="th",
            iso639_3=("tha",),
            name="Thai",
            scripts=("Thai",),
            nllb_code="tha_Thai",
            country_tlds=("th", "ไทย"),
            word_tokenizer="pythainlp",
            min_alt_chars=5,
            max_alt_chars=200,
            boilerplate_words=("โลโก้", "ไอคอน", "แบนเนอร์", "โฆษณา", "ปุ่ม"),
        ),
        Language(
            code="vi",
            iso639_3=("vie",),
            name="Vietnamese",
            scripts=("Latn",),
            nllb_code="vie_Latn",
            country_tlds=("vn",),
            min_alt_words=4,
            boilerplate_words=("biểu tượng", "logo", "ảnh đại diện", "quảng cáo", "nút"),
            marker_chars="ơưđ",
        ),
        # Known beyond the paper's eight, ready for MELLA_LANGUAGES.
        Language(
            code="uk",
            iso639_3=("ukr",),
            name="Ukrainian",
            scripts=("Cyrl",),
            nllb_code="ukr_Cyrl",
            country_tlds=("ua", "укр"),
            langid_relatives=("ru", "be", "bg"),
            boilerplate_words=("логотип", "іконка", "банер", "реклама", "аватар", "кнопка"),
            marker_chars="їєґі",
        ),
        Language(
            code="sw",
            iso639_3=("swa",),
            name="Swahili",
            scripts=("Latn",),
            nllb_code="swh_Latn",
            country_tlds=("tz",),
            boilerplate_words=("nembo", "ikoni", "bango", "tangazo", "kitufe"),
        ),
    ]
}


def load_languages(codes: str | None = None, languages_file: str | None = None) -> dict[str, Language]:
    """The configured languages, in the configured order.

    ``codes`` defaults to the setting ``MELLA_LANGUAGES`` (else the paper's eight); ``languages_file`` to
    ``MELLA_LANGUAGES_FILE`` (mella_assets/settings.py). Unknown codes are an error that names the way to describe
    them.
    """
    registry = dict(REGISTRY)
    settings = load_settings() if codes is None or languages_file is None else None
    if languages_file is None:
        languages_file = settings.languages_file
    if languages_file:
        known = {f.name for f in fields(Language)}
        for record in json.loads(Path(languages_file).read_text(encoding="utf-8")):
            unknown = set(record) - known
            if unknown:
                raise ValueError(f"{languages_file}: unknown Language fields {sorted(unknown)}")
            for key in (
                "scripts",
                "langid_labels",
                "langid_relatives",
                "langid_fast_accept_scripts",
                "boilerplate_words",
                "country_tlds",
                "iso639_3",
            ):
                if record.get(key) is not None:
                    record[key] = tuple(record[key])
            registry[record["code"]] = Language(**record)
    raw = codes if codes is not None else ",".join(settings.languages)
    wanted = [c.strip() for c in raw.split(",") if c.strip()] or list(DEFAULT_LANGUAGE_CODES)
    missing = [c for c in wanted if c not in registry]
    if missing:
        raise ValueError(
            f"unknown language code(s) {missing}; describe them in a JSON file named by MELLA_LANGUAGES_FILE"
        )
    return {code: registry[code] for code in dict.fromkeys(wanted)}


LANGUAGES: dict[str, Language] = load_languages()
