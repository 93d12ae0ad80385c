"""The boilerplate lexicons and credit lists kept as data in ``know/lexicons/`` (one phrase a line, ``[class]``
headers, ``#`` comments): ``shared.txt`` for every language, ``<code>.txt`` per language, ``credits.txt`` for
photo agencies and credit markers.

Classes of page furniture: ``social``, ``navigation``, ``share_print``, ``app_store``, ``captcha``, ``weather``,
``font_size``, ``ads``, ``image_words``, ``ui``. Two sections are not furniture: ``suffixes`` (particles that may
follow a phrase in the same word, Korean) and ``common`` (content words of the language, evidence against
"names only" where the script has no capitals).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from importlib import resources

import regex

from mella_assets.languages import Language
from mella_assets.lib.text import fold_case, stop_words, tokenize_words

BOILERPLATE_CLASSES: tuple[str, ...] = (
    "social",
    "navigation",
    "share_print",
    "app_store",
    "captcha",
    "weather",
    "font_size",
    "ads",
    "image_words",
    "ui",
)
_NOT_FURNITURE = ("suffixes", "common")
# Longer than any furniture label and than every language's max_alt_chars: such a text is judged by its length.
MAX_FURNITURE_CHARS = 500
_CREDIT_SECTIONS = ("agencies", "markers", "bare_markers")


@cache
def read_lexicon(name: str) -> dict[str, tuple[str, ...]]:
    """Sections of ``know/lexicons/<name>.txt`` (phrases in file order, whitespace collapsed); empty when the file
    does not exist (a language described only by the registry)."""
    resource = resources.files("mella_assets.know") / "lexicons" / f"{name}.txt"
    if not resource.is_file():
        return {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in resource.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            if current not in (*BOILERPLATE_CLASSES, *_NOT_FURNITURE, *_CREDIT_SECTIONS):
                raise ValueError(f"lexicon {name}: unknown section [{current}]")
            sections.setdefault(current, [])
            continue
        if current is None:
            raise ValueError(f"lexicon {name}: phrase {line!r} before any [section]")
        sections[current].append(" ".join(line.split()))
    return {section: tuple(dict.fromkeys(phrases)) for section, phrases in sections.items()}


def boilerplate_phrases(code: str) -> dict[str, tuple[str, ...]]:
    """Boilerplate class -> phrases for a language: its own lexicon plus the shared one."""
    own, shared = read_lexicon(code), read_lexicon("shared")
    return {
        cls: tuple(dict.fromkeys((*own.get(cls, ()), *shared.get(cls, ()))))
        for cls in BOILERPLATE_CLASSES
        if own.get(cls) or shared.get(cls)
    }


def lexicon_section(code: str, section: str) -> tuple[str, ...]:
    """One non-furniture section (``suffixes``, ``common``) of a language's lexicon."""
    return read_lexicon(code).get(section, ())


_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*")
# Where a page title separates its headline from the site's name ("Headline | Novinky.cz", "Headline - iDNES.cz").
_TITLE_SEPARATORS = regex.compile(r"\s[|\-–—»:·•]{1,2}\s")
# A title segment that ends like a domain name ("Novinky.cz", "B92.net").
_DOMAIN_LIKE = regex.compile(r"\.\p{L}{2,}\Z")
_SECOND_LEVEL_LABELS = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "in", "gv"})
_HOST_PREFIXES = frozenset({"www", "m", "amp", "mobile", "en", "www2"})


def _tokens(text: str, language: Language) -> list[str]:
    """Case-folded words of ``text`` (Serbian folded to Latin; Thai cut by newmm), punctuation dropped."""
    if language.word_tokenizer == "pythainlp":
        text = " ".join(tokenize_words(text, language))
    return [fold_case(word, language.code) for word in _WORD.findall(text)]


@cache
def _phrase_classes(language: Language) -> dict[str, str]:
    """Folded phrase (words joined by one space) -> boilerplate class; the language's own lexicon first, then
    the registry's ``boilerplate_words`` (languages without a lexicon file) as ``image_words``."""
    classes: dict[str, str] = {}
    for cls, phrases in boilerplate_phrases(language.code).items():
        for phrase in phrases:
            classes.setdefault(" ".join(_tokens(phrase, language)), cls)
    for word in language.boilerplate_words:
        classes.setdefault(" ".join(_tokens(word, language)), "image_words")
    classes.pop("", None)
    return classes


@cache
def _boilerplate_pattern(language: Language) -> regex.Pattern[str]:
    """Whole-word matcher of the language's and the shared lexicon phrases over folded words joined by single
    spaces, longest first; a phrase may carry one of the language's ``suffixes`` (Korean particles)."""
    phrases = sorted(_phrase_classes(language), key=len, reverse=True)
    alternatives = "|".join(regex.escape(p) for p in phrases)
    suffixes = "|".join(regex.escape(s) for s in sorted(lexicon_section(language.code, "suffixes"), key=len)[::-1])
    suffix = f"(?:{suffixes})?" if suffixes else ""
    return regex.compile(rf"(?<![\p{{L}}\p{{N}}])(?P<phrase>{alternatives}){suffix}(?![\p{{L}}\p{{M}}\p{{N}}])")


@cache
def _ad_marker_pattern(language: Language) -> regex.Pattern[str]:
    """A paid-content marker set apart at either end: "Реклама: ...", "... | Hirdetés", "(x) ...", "광고 · ..."."""
    phrases = (*boilerplate_phrases(language.code).get("ads", ()), "x")
    alternatives = "|".join(regex.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return regex.compile(
        rf"^\s{{0,3}}[(\[]\s{{0,3}}(?:{alternatives})\s{{0,3}}[)\]]|^\s{{0,3}}(?:{alternatives})\s{{0,3}}[:|·•/.]"
        rf"|[(\[]\s{{0,3}}(?:{alternatives})\s{{0,3}}[)\]]\s{{0,3}}\Z|[|·•/\-–—]\s{{0,3}}(?:{alternatives})\s{{0,3}}\Z",
        regex.IGNORECASE,
    )


def boilerplate_class(alt_text: str, language: Language) -> str | None:
    """The boilerplate class of an alt text that is page furniture, else None.

    Furniture: nothing but lexicon phrases, stop words and numbers ("Facebook", "섬네일 이미지", "Zpět nahoru"),
    lexicon phrases with one other word at most ("logo Facebook", "ikona košíku", "Nhập mã xác nhận"), or a
    paid-content marker set apart at either end ("Реклама: ...", "Реклама. ...", "... (x)"). The class is that
    of the first phrase found ("filler" for stop words and numbers alone). Texts over
    :data:`MAX_FURNITURE_CHARS` are never furniture (their length rejects them)."""
    if len(alt_text) > MAX_FURNITURE_CHARS:
        return None
    if _ad_marker_pattern(language).search(alt_text):
        return "ads"
    joined = " ".join(_tokens(alt_text, language))
    pattern = _boilerplate_pattern(language)
    first = pattern.search(joined)
    stops = stop_words(language.code)
    remaining = [w for w in pattern.sub(" ", joined).split() if w not in stops and not _is_noise(w)]
    if not remaining:
        return _phrase_classes(language).get(first.group("phrase"), "filler") if first else "filler"
    if first is not None and len(remaining) <= 1:
        return _phrase_classes(language)[first.group("phrase")]
    return None


def _is_noise(word: str) -> bool:
    """A number or a lone cased letter ("28 độ C", "A+"): no word of a description."""
    return word.isdigit() or (len(word) == 1 and word.upper() != word.lower())


def registered_label(host: str | None) -> str | None:
    """The name part of a host's registered domain (``www.novinky.cz`` -> ``novinky``, ``yna.co.kr`` -> ``yna``);
    None for IP addresses and one-label hosts."""
    if not host or host.replace(".", "").isdigit():
        return None
    labels = [label for label in host.lower().rstrip(".").split(".") if label]
    while labels and labels[0] in _HOST_PREFIXES and len(labels) > 2:
        labels = labels[1:]
    if len(labels) < 2:
        return None
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL_LABELS:
        return labels[-3]
    return labels[-2]


def title_segments(title: str | None) -> list[str]:
    """The parts of a page title between separators (" | ", " - ", " – ", " :: "...), outermost last."""
    if not title:
        return []
    return [part.strip() for part in _TITLE_SEPARATORS.split(title) if part.strip()]


def site_names_by_host(
    hosts: Sequence[str | None], page_urls: Sequence[str | None], titles: Sequence[str | None]
) -> dict[str, set[str]]:
    """Site names read off the titles of each host's pages: a last title segment (or a first one that looks like a
    domain) that recurs on two pages of the host or more, or on a single page a last segment after " | " of four
    words at most or one that looks like a domain ("Novinky.cz")."""
    counts: dict[str, Counter] = {}
    seen: set[tuple[str, str]] = set()
    names: dict[str, set[str]] = {}
    for host, url, title in zip(hosts, page_urls, titles, strict=True):
        if host is None or not title or (host, url or "") in seen:
            continue
        seen.add((host, url or ""))
        parts = title_segments(title)
        if len(parts) < 2:
            continue
        last = parts[-1]
        # The first segment only when it looks like a domain ("iDNES.cz - Zprávy"): on most sites it is the
        # headline, and section pages repeat theirs.
        first = [parts[0]] if _DOMAIN_LIKE.search(parts[0]) else []
        counts.setdefault(host, Counter()).update({last, *first})
        if ("|" in title and len(last.split()) <= 4) or _DOMAIN_LIKE.search(last):
            names.setdefault(host, set()).add(last)
    for host, counter in counts.items():
        names.setdefault(host, set()).update(part for part, n in counter.items() if n >= 2)
    return {host: found for host, found in names.items() if found}


@lru_cache(maxsize=65_536)
def _name_tokens(name: str, language: Language) -> list[str]:
    """:func:`_tokens` of a site name, remembered: every alt text of a site is compared with the same names."""
    return _tokens(name, language)


def _contains(haystack: list[str], needle: list[str]) -> int:
    """Start of ``needle`` as a contiguous run in ``haystack``, else -1."""
    n = len(needle)
    for start in range(len(haystack) - n + 1):
        if haystack[start : start + n] == needle:
            return start
    return -1


def names_the_site(alt_text: str, site_names: Iterable[str], domain_label: str | None, language: Language) -> bool:
    """True when an alt text is the site's own name: it contains a site name of two words or more (or one that
    looks like a domain, "Novinky.cz"), contains a one-word name or the domain's label with fewer than the
    language's ``min_alt_words`` other words around it, is set apart from a slogan like a title segment
    ("VnExpress - Báo tiếng Việt nhiều người xem nhất"), or is itself a part of a site name ("الأهرام" on
    "بوابة الأهرام")."""
    words = _tokens(alt_text, language)
    if not words:
        return False
    stops = stop_words(language.code)
    furniture = set(_phrase_classes(language))
    content = [w for w in words if w not in stops and w not in furniture]
    names = [(name, _name_tokens(name, language)) for name in site_names if name]
    if domain_label and len(domain_label) >= 3:
        names.append((domain_label, [domain_label]))
    segments = [_tokens(segment, language) for segment in title_segments(alt_text)] if len(words) > 1 else []
    for name, name_words in names:
        if not name_words:
            continue
        if len(segments) > 1 and name_words in segments:  # "VnExpress - Báo tiếng Việt...", a title-like slogan
            return True
        start = _contains(words, name_words)
        if start >= 0:
            distinctive = len(name_words) >= 2 or regex.search(r"[.\d]", name) is not None
            others = [w for w in content if w not in name_words]
            if distinctive or len(others) < language.min_alt_words:
                return True
        if content and _contains(name_words, content) >= 0:
            return True
    return False
