"""Text normalisation, word tokenisation and keyword extraction for the configured languages.

Tokenisers: ``pythainlp`` newmm for Thai (no spaces between words), ``kiwipiepy`` morphemes for Korean,
Unicode letter/number runs elsewhere. Keywords are the content tokens used by keyword accuracy: case-folded,
stop words, punctuation and numbers dropped, Serbian Cyrillic folded to Latin, stemmed where PyStemmer has the
language.
"""

from __future__ import annotations

import threading
import unicodedata
from functools import cache
from importlib import resources
from typing import Any

import regex

from mella_assets.languages import Language

# A word starts with a letter or digit and may carry combining marks (Arabic harakat, Thai vowel signs are
# category M, which the stdlib ``\w`` does not match, so ``re`` would split "مُحَمَّد" into pieces).
_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*")
_HAS_LETTER = regex.compile(r"\p{L}")
# Korean morpheme tags that carry content: nouns (NNG/NNP/NNB), verb and adjective stems (VV/VA incl. the
# irregular variants VV-R, VA-I...), roots (XR) and foreign words in Latin script (SL).
_KIWI_CONTENT_TAGS = ("NN", "VV", "VA", "XR", "SL")

SCRIPTS: tuple[str, ...] = ("Latn", "Cyrl", "Arab", "Hang", "Thai", "Hani", "other")
_SCRIPT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LATIN", "Latn"),
    ("CYRILLIC", "Cyrl"),
    ("ARABIC", "Arab"),
    ("HANGUL", "Hang"),
    ("THAI", "Thai"),
    ("CJK", "Hani"),
)

# Serbian Cyrillic -> Gaj's Latin alphabet, a one-to-one mapping (the three digraphs lj, nj, dž included).
_SR_CYRL_TO_LATN = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "ђ": "đ", "е": "e", "ж": "ž", "з": "z", "и": "i",
    "ј": "j", "к": "k", "л": "l", "љ": "lj", "м": "m", "н": "n", "њ": "nj", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "ћ": "ć", "у": "u", "ф": "f", "х": "h", "ц": "c", "ч": "č", "џ": "dž", "ш": "š",
}  # fmt: skip
_SR_TABLE = str.maketrans(
    {
        **_SR_CYRL_TO_LATN,
        **{k.upper(): (v[0].upper() + v[1:]) for k, v in _SR_CYRL_TO_LATN.items()},
    }
)


def normalize_text(text: str) -> str:
    """NFC-normalise, drop control and format characters (zero-width, bidi overrides, soft hyphen) and U+FFFD
    (what a decoder or the HTML parser puts where bytes were undecodable or NUL: no meaning left), collapse
    whitespace runs to one space and strip."""
    text = unicodedata.normalize("NFC", text)
    # Whitespace controls (tab, newline...) become spaces first so that words on either side stay apart.
    chars = []
    for ch in text:
        if ch.isspace():
            chars.append(" ")
        elif ch != "\ufffd" and unicodedata.category(ch) not in ("Cc", "Cf", "Cs"):
            chars.append(ch)
    return " ".join("".join(chars).split())


def fold_serbian(text: str) -> str:
    """Transliterate Serbian Cyrillic to Latin so both scripts of Serbian compare equal (Љ -> Lj, џ -> dž)."""
    return text.translate(_SR_TABLE)


def script_of(text: str) -> dict[str, float]:
    """Share of the letters of ``text`` in each script of :data:`SCRIPTS` (all keys present; all 0.0 when
    ``text`` has no letter)."""
    counts = dict.fromkeys(SCRIPTS, 0)
    total = 0
    for ch in text:
        if not ch.isalpha():
            continue
        total += 1
        counts[_script_of_char(ch)] += 1
    if total == 0:
        return dict.fromkeys(SCRIPTS, 0.0)
    return {script: n / total for script, n in counts.items()}


@cache
def _script_of_char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return script
    return "other"


_kiwi: Any = None
_kiwi_lock = threading.Lock()


def _get_kiwi() -> Any:
    """The process-wide Kiwi analyser, built on first use (loading takes ~2.4 s)."""
    global _kiwi
    if _kiwi is None:
        with _kiwi_lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi

                _kiwi = Kiwi()
    return _kiwi


def kiwi_tokens(text: str) -> list[tuple[str, str]]:
    """Kiwi's (morpheme, tag) pairs of a Korean text."""
    return [(token.form, token.tag) for token in _get_kiwi().tokenize(text)]


def tokenize_words(text: str, language: Language) -> list[str]:
    """Split normalised ``text`` into words (Thai: newmm words, Korean: Kiwi morphemes, else letter runs).

    Punctuation-only tokens are dropped; case is kept.
    """
    text = normalize_text(text)
    if not text:
        return []
    if language.word_tokenizer == "pythainlp":
        from pythainlp.tokenize import word_tokenize

        tokens = word_tokenize(text, engine="newmm", keep_whitespace=False)
        return [t for t in (t.strip() for t in tokens) if t and _WORD.search(t)]
    if language.word_tokenizer == "kiwi":
        return [form for form, _tag in kiwi_tokens(text) if _WORD.search(form)]
    return _WORD.findall(text)


def word_units(text: str, language: Language) -> list[str]:
    """The units an alt text's length is counted in: whitespace-separated words with a letter (Korean:
    eojeol, a word with its particles; Vietnamese: syllables), Thai words from pythainlp newmm (Thai has no spaces
    between words; newmm is already the Thai tokeniser here, ~40k texts/s, and a dictionary-free syllable count
    would count a three-syllable word as three)."""
    text = normalize_text(text)
    tokens = tokenize_words(text, language) if language.word_tokenizer == "pythainlp" else text.split(" ")
    return [token for token in tokens if _HAS_LETTER.search(token)]


@cache
def stop_words(language_code: str) -> frozenset[str]:
    """The stop words of a language from ``lib/data/stopwords_<code>.txt`` (case-folded, Serbian folded to
    Latin); empty when the language has no list."""
    resource = resources.files("mella_assets.lib") / "data" / f"stopwords_{language_code}.txt"
    if not resource.is_file():
        return frozenset()
    words = set()
    for line in resource.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            words.add(fold_case(word, language_code))
    return frozenset(words)


@cache
def get_stemmer(algorithm: str) -> Any:
    """The PyStemmer stemmer for a Snowball algorithm name (one per process)."""
    import Stemmer

    return Stemmer.Stemmer(algorithm)


def fold_case(token: str, language_code: str) -> str:
    """Case-fold and NFC-normalise a token; Serbian Cyrillic folded to Latin."""
    token = unicodedata.normalize("NFC", token.casefold())
    return fold_serbian(token) if language_code == "sr" else token


def normalize_token(token: str, language: Language) -> str:
    """Case-fold, NFC, Serbian-fold and stem one token the way :func:`keywords` does (no stop-word test)."""
    token = fold_case(token, language.code)
    if language.stemmer:
        token = get_stemmer(language.stemmer).stemWord(token)
    return token


def _is_number(token: str) -> bool:
    return not _HAS_LETTER.search(token)


def keywords(text: str, language: Language) -> list[str]:
    """Content tokens of ``text``: stop words, punctuation and numbers removed, case-folded,
    Serbian in Latin script, stemmed where a stemmer exists; unique, in order of first appearance."""
    text = normalize_text(text)
    if not text:
        return []
    stops = stop_words(language.code)
    if language.word_tokenizer == "kiwi":
        tokens = [form for form, tag in kiwi_tokens(text) if tag.startswith(_KIWI_CONTENT_TAGS)]
    else:
        tokens = tokenize_words(text, language)
    out: dict[str, None] = {}
    for token in tokens:
        if _is_number(token):
            continue
        folded = fold_case(token, language.code)
        if folded in stops:
            continue
        if language.stemmer:
            folded = get_stemmer(language.stemmer).stemWord(folded)
        if folded:
            out.setdefault(folded, None)
    return list(out)
