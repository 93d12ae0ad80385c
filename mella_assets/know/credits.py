"""Photo credits and bylines stripped from an alt text before it is judged, and the names-only check after it.

News alt texts often carry the caption *and* its credit: "Hráči Sparty slaví gól. Foto: ČTK / Michal Kamaryt",
"(서울=연합뉴스) 김주형 기자 = 광화문광장에서 열린 집회 2024.5.27 kjh@yna.co.kr", "Эрлинг Холанд, Getty Images".
:func:`strip_credits` removes, repeatedly from the ends and in brackets anywhere: a credit marker with what follows
it ("Foto:", "фото:", "Ảnh:", "사진=", "ภาพ:", "صورة:", "©"), an agency or stock name after a separator (Getty
Images, Reuters, AFP, ТАСС, 연합뉴스, ČTK, MTI, Tanjug, TTXVN...; ``know/lexicons/credits.txt``), Korean bylines
("홍길동 기자 =") and datelines ("(서울=연합뉴스)"), a trailing reporter e-mail and a trailing date. What is left is the
caption that goes to D_know.

:func:`has_content_words` then asks whether that caption says something in the language or only names people,
teams or places: a lower-case word that is not a stop word (cased scripts), a common noun, verb or adjective per
Kiwi (Korean), a stop word or common word of the language's lexicon (Arabic, Thai: no capitals), for Arabic two
words with the definite article (outside names such as "عبد الله"), for Thai mostly dictionary words (a
transliterated foreign name falls apart into short non-words).
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import regex

from mella_assets.know.boilerplate import lexicon_section, read_lexicon
from mella_assets.languages import Language
from mella_assets.lib.text import fold_case, kiwi_tokens, stop_words, word_units

# Longer alt texts are rejected as too long whatever their credit says (every language's max_alt_chars is below
# it); past this the stripping is skipped, which also bounds the work per text.
MAX_STRIP_CHARS = 1_000
_SEPARATORS = r"[\s,،;|/\-–—·•]"
# Kiwi tags of content morphemes: common nouns, verb and adjective stems, roots, adverbs.
_KOREAN_CONTENT_TAGS = ("NNG", "VV", "VA", "XR", "MAG")
_ARABIC_PROCLITICS = ("و", "ف", "ب", "ل", "ك")
_ARABIC_NAME_LINKS = frozenset({"عبد", "أبو", "ابو", "أبي", "بن", "ابن", "بنت"})
_THAI_MIN_WORD = 4  # code points, vowel and tone marks included
_HAS_LOWER = regex.compile(r"\p{Ll}")
_PUNCTUATION = ".,;:!?«»„“”\"'()[]{}<>-–—/…"
_BOUNDARY_LEFT = r"(?<![\p{L}\p{N}])"
_BOUNDARY_RIGHT = r"(?![\p{L}\p{M}\p{N}])"


def _alternation(phrases: tuple[str, ...]) -> str:
    """Phrases longest first, spaces matching any whitespace run."""
    ordered = sorted(phrases, key=len, reverse=True)
    return "|".join(regex.escape(p).replace(r"\ ", r"\s+") for p in ordered)


class CreditPatterns(NamedTuple):
    """The compiled credit patterns and how :func:`strip_credits` applies them (each bounded, so that no text
    costs more than linear time): ``in_brackets`` / ``agency_at_end`` are matched on a bracketed group's content
    (≤ 100 characters), ``leading`` and ``byline`` only at the start, ``trailing`` only within the last
    :data:`TAIL_CHARS` characters."""

    in_brackets: regex.Pattern[str]
    agency_at_end: regex.Pattern[str]
    leading: regex.Pattern[str]
    byline: regex.Pattern[str]
    trailing: tuple[regex.Pattern[str], ...]


# A trailing credit (marker, agency, e-mail, date) is never longer than this.
TAIL_CHARS = 200
# Rounds of stripping: a caption rarely stacks more than three credits ("... Foto: ČTK 2024.5.27 a@b.cz").
_MAX_ROUNDS = 4
# A bracketed group short enough to be a credit: "(AP Photo/Evan Vucci)", "[사진=연합뉴스]", "(서울=연합뉴스)".
_BRACKETED = regex.compile(r"[(\[（]([^()\[\]（）]{0,100})[)\]）]")


@cache
def _credit_patterns() -> CreditPatterns:
    """The credit patterns built from ``know/lexicons/credits.txt``."""
    lexicon = read_lexicon("credits")
    agency = f"{_BOUNDARY_LEFT}(?:{_alternation(lexicon['agencies'])}){_BOUNDARY_RIGHT}"
    marker = f"{_BOUNDARY_LEFT}(?:{_alternation(lexicon['markers'])})"
    bare = f"{_BOUNDARY_LEFT}(?:{_alternation(lexicon['bare_markers'])})"
    opens = rf"(?:{bare}|{marker}\s{{0,3}}[:=：]|{marker}\s{{1,3}}(?={agency})|©|\(c\))"
    email = r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,6}\.[a-zA-Z]{2,24}"
    date = r"(?:\d{4}[./-]\s?\d{1,2}[./-]\s?\d{1,2}|\d{1,2}[./-]\s?\d{1,2}[./-]\s?\d{4})\.?"
    # Simple case folding: full folding (VERSION1) costs ~200x per position here, and no name needs it.
    flags = regex.IGNORECASE
    return CreditPatterns(
        # "AP Photo/Evan Vucci", "사진=연합뉴스", "서울=연합뉴스", "Ảnh: TTXVN"
        in_brackets=regex.compile(rf"\s{{0,3}}(?:[^=]{{0,30}}=\s{{0,3}})?(?:{opens}|{agency}|{marker})", flags),
        # "Michal Kamaryt, ČTK"
        agency_at_end=regex.compile(rf"{agency}\s{{0,3}}\Z", flags),
        # "Фото: РИА Новости. Путин на саммите" -> the credit before the first sentence end, when text follows it
        leading=regex.compile(rf"\s{{0,3}}{opens}[^.|\n]{{0,80}}[.|]\s{{1,3}}(?=\p{{L}})", flags),
        byline=regex.compile(r"\s{0,3}[\p{Hangul}]{2,4}\s{0,3}(?:기자|특파원)\s{0,3}=\s{0,3}", flags),
        trailing=(
            # "... Foto: ČTK / Michal Kamaryt", "... 사진=연합뉴스", "... © Profimedia"
            regex.compile(rf"(?:^|(?<={_SEPARATORS}|\.)){opens}[^|]{{0,120}}\Z", flags),
            # "..., Getty Images", "... REUTERS/Kevin Lamarque", "... | ТАСС"
            regex.compile(
                rf"(?:^|[,،;|/\-–—·•.(]\s{{0,3}}|\s[,،;|/\-–—·•(]\s{{0,3}})(?:©\s{{0,3}})?{agency}"
                rf"(?:\s{{0,3}}[/,]\s{{0,3}}[^|/,()]{{0,60}})?\s{{0,3}}\)?\s{{0,3}}\Z",
                flags,
            ),
            # "홍길동 기자 hong@yna.co.kr", "... 2024.5.27 kjh@yna.co.kr", "... (jan.novak@ctk.cz)", a Korean
            # caption's last word then an e-mail (the Korean press's byline); not "Pište nám na info@hrad.cz",
            # which is contact data (alt_has_email)
            regex.compile(
                rf"(?:(?<=[.!?)\]»\d]\s{{0,3}}|\p{{Hangul}}\s{{1,3}})|[\p{{Hangul}}]{{2,4}}\s{{0,3}}(?:기자|특파원)\s{{0,3}}"
                rf"|[(<\[]){email}[)>\]]?\s{{0,3}}\Z",
                flags,
            ),
            regex.compile(rf"[\s,(]{{0,4}}{date}\)?\s{{0,3}}\Z", flags),
        ),
    )


_TRIM = regex.compile(r"^[\s,،;:|/\-–—·•=]{1,20}|[\s,،;:|/\-–—·•=]{1,20}\Z")


def _is_bracketed_credit(content: str, patterns: CreditPatterns) -> bool:
    return patterns.in_brackets.match(content) is not None or patterns.agency_at_end.search(content[-40:]) is not None


def strip_credits(text: str) -> str:
    """``text`` (normalised) without photo credits, bylines, datelines, a trailing e-mail and a trailing date;
    separators left dangling at either end are trimmed. Texts over :data:`MAX_STRIP_CHARS` come back unchanged."""
    if len(text) > MAX_STRIP_CHARS:
        return text
    patterns = _credit_patterns()
    for _ in range(_MAX_ROUNDS):
        before = text
        text = _BRACKETED.sub(lambda m: " " if _is_bracketed_credit(m.group(1), patterns) else m.group(0), text)
        for anchored in (patterns.leading, patterns.byline):
            found = anchored.match(text)
            if found:
                text = text[found.end() :]
        for trailing in patterns.trailing:
            found = trailing.search(text, max(0, len(text) - TAIL_CHARS))
            if found:
                text = text[: found.start()]
        text = _TRIM.sub("", " ".join(text.split()))
        if text == before:
            break
    return text


def has_content_words(text: str, language: Language) -> bool:
    """True when ``text`` has a word of the language that is not a proper name (rules: module docstring); False
    for names only ("Эрлинг Холанд, Кевин Де Брёйне", "손흥민과 이강인", "محمد صلاح").

    A text in capitals only ("ПРАЗДНИК В МОСКВЕ") has no case to go by: a stop word counts there."""
    stops = stop_words(language.code)
    common = {fold_case(word, language.code) for word in lexicon_section(language.code, "common")}
    if language.word_tokenizer == "kiwi":
        return any(tag.startswith(_KOREAN_CONTENT_TAGS) for _form, tag in kiwi_tokens(text))
    units = [unit.strip(_PUNCTUATION) for unit in word_units(text, language)]
    folded = [fold_case(unit, language.code) for unit in units]
    if any(word in common for word in folded):
        return True
    if not any(ch.isupper() or ch.islower() for ch in text if ch.isalpha() and ch.upper() != ch.lower()):
        # Caseless scripts (Arabic, Thai): a function word or a common word, a clitic split off for Arabic.
        for word in folded:
            if word in stops:
                return True
            if language.code == "ar" and word[:1] in _ARABIC_PROCLITICS and (word[1:] in common or word[1:] in stops):
                return True
        if language.code == "ar":
            return _definite_words(folded) >= 2
        return language.word_tokenizer == "pythainlp" and _mostly_thai_words(units)
    return _has_lower_content_word(units, folded, stops)


def _definite_words(words: list[str]) -> int:
    """Arabic words with the definite article (ال, also after و ب ف ك ل: "والأرز", "بالفستق"), not counting the
    article inside a name ("عبد الله", "أبو الغيط"): common nouns and adjectives carry it, most names do not."""
    count = 0
    for previous, word in zip(["", *words], words, strict=False):
        if previous in _ARABIC_NAME_LINKS:
            continue
        if word.startswith("ال") or (word[:1] in _ARABIC_PROCLITICS and word[1:3] == "ال") or word.startswith("لل"):
            count += 1
    return count


def _mostly_thai_words(units: list[str]) -> bool:
    """Thai: two dictionary words of four letters or more, making up half the words at least. newmm cuts a
    transliterated foreign name ("ลิโอเนล เมสซี") into short pieces that are rarely dictionary words."""
    dictionary = _thai_dictionary()
    long_words = sum(1 for unit in units if len(unit) >= _THAI_MIN_WORD and unit in dictionary)
    return long_words >= 2 and 2 * long_words >= len(units)


@cache
def _thai_dictionary() -> frozenset[str]:
    from pythainlp.corpus import thai_words

    return frozenset(thai_words())


def _has_lower_content_word(units: list[str], folded: list[str], stops: frozenset[str]) -> bool:
    if not any(_HAS_LOWER.search(unit) for unit in units):  # all capitals
        return any(word in stops for word in folded)
    return any(
        unit[:1].islower() and word not in stops and sum(ch.isalpha() for ch in word) >= 2
        for unit, word in zip(units, folded, strict=True)
    )
