"""The language a page declares, from its markup and its address: the prior that language ID uses.

A short alt text often reads the same in closely related standards (most Latin-script Serbian sentences are also
correct Croatian and Bosnian), so where it was published is the only evidence left. Signals, strongest first:

1. ``<html lang>`` (BCP 47, e.g. ``sr-Latn-RS``), then ``og:locale`` (``sr_RS``). Values that are not a language
   tag (``{{lang}}``, ``x-default``, ``zxx``, ``und``, ``mul``) are ignored.
2. The country-code top-level domain of the page's host (``.rs`` / ``.срб`` -> sr, ``.hr`` -> hr, ``.ba`` -> bs),
   when the markup declares nothing, or declares English on a national domain whose language is not English:
   ``en`` / ``en-US`` is the default of common CMSs (WordPress, Joomla) that site owners leave unchanged, so on a
   ``.rs`` host it says less about the text than the domain does.

3. The site: a page with none of these takes the language most of its host's other pages declare (templates differ
   between sections of one site), else the language most of the host's texts vote for (``text_votes``: for
   Serbian, alt texts whose words are ekavian vote sr, ijekavian or Croatian ones hr; see ``lib/filters.py``).
   Ties give nothing.

The domain table is the registry's ``Language.country_tlds`` plus :data:`RELATIVE_COUNTRY_TLDS` (languages that are
not crawl targets but decide close calls, e.g. Croatian against Serbian). Generic domains (.com, .org, .eu) and
multilingual countries without one dominant standard (.me: Montenegrin; .ch, .be) say nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from mella_assets.languages import REGISTRY, Language

# Languages the crawl does not target but that a page prior must name: Serbian's neighbours above all (.ba is
# Bosnia and Herzegovina: Bosnian, Croatian and Serbian are all official there; Bosnian is taken as the prior, and
# Serbian text on such pages is usually Cyrillic or ijekavian, which the script and word rules settle first).
RELATIVE_COUNTRY_TLDS: dict[str, str] = {
    "hr": "hr",
    "ba": "bs",
    "si": "sl",
    "sk": "sk",
    "pl": "pl",
    "bg": "bg",
    "бг": "bg",
    "mk": "mk",
    "мкд": "mk",
    "by": "be",
    "бел": "be",
    "ir": "fa",
    "pk": "ur",
}
# Tags that name no language (BCP 47 special codes) or are template placeholders.
_NOT_A_LANGUAGE = frozenset({"und", "mul", "zxx", "mis", "x", "i"})
_PRIMARY_SUBTAG = re.compile(r"[a-z]{2,3}")
ENGLISH = "en"


@dataclass(frozen=True)
class PageLanguage:
    """``code``: ISO 639 primary subtag or None; ``source``: ``html_lang``, ``og_locale``, ``tld`` or None."""

    code: str | None
    source: str | None  # html_lang | og_locale | tld | site | site_text


def language_tag_prefix(value: str | None) -> str | None:
    """The primary language subtag of a BCP 47 tag or POSIX locale (``"sr-Latn-RS"``, ``"sr_RS"``, ``"SR"`` ->
    ``"sr"``); None for blanks, placeholders and tags that name no language."""
    if not value:
        return None
    prefix = value.strip().replace("_", "-").split("-")[0].lower()
    if not _PRIMARY_SUBTAG.fullmatch(prefix) or prefix in _NOT_A_LANGUAGE:
        return None
    return prefix


def country_tld_table(languages: Iterable[Language] = REGISTRY.values()) -> dict[str, str]:
    """Top-level domain (Unicode form, lower case) -> language code."""
    table = dict(RELATIVE_COUNTRY_TLDS)
    for language in languages:
        for tld in language.country_tlds:
            table[tld.lower()] = language.code
    return table


_DEFAULT_TLDS = country_tld_table()


@lru_cache(maxsize=65536)
def _tld_of_host(host: str) -> str:
    label = host.rstrip(".").rsplit(".", 1)[-1].lower()
    if label.startswith("xn--"):
        try:
            return label.encode("ascii").decode("idna")
        except UnicodeError:
            return label
    return label


def host_language(url_or_host: str | None, tlds: Mapping[str, str] = _DEFAULT_TLDS) -> str | None:
    """The language of a page's national domain (``https://www.rts.rs/...`` -> ``"sr"``), None for generic ones."""
    if not url_or_host:
        return None
    try:
        host = urlsplit(url_or_host).hostname if "/" in url_or_host else url_or_host
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if not host:
        return None
    return tlds.get(_tld_of_host(host))


def page_language(
    html_lang: str | None,
    og_locale: str | None = None,
    page_url: str | None = None,
    tlds: Mapping[str, str] = _DEFAULT_TLDS,
) -> PageLanguage:
    """The page's language prior from its ``<html lang>``, ``og:locale`` and address (rules: module docstring)."""
    declared, source = language_tag_prefix(html_lang), "html_lang"
    if declared is None:
        declared, source = language_tag_prefix(og_locale), "og_locale"
    if declared is not None and declared != ENGLISH:
        return PageLanguage(declared, source)
    by_domain = host_language(page_url, tlds)
    if by_domain is not None and by_domain != ENGLISH:
        return PageLanguage(by_domain, "tld")
    return PageLanguage(declared, source if declared is not None else None)


def declared_mismatch(html_lang: str | None, og_locale: str | None, language: Language) -> bool:
    """True when the page declares a language that is not ``language`` (one of its labels): ``<html lang>``,
    else ``og:locale``. Silent, English (an unchanged CMS default), or two declarations that disagree: False,
    the text decides. The alt-text gate's page-level condition, and the crawl's routing of pages to languages."""
    html, og = language_tag_prefix(html_lang), language_tag_prefix(og_locale)
    if html is not None and og is not None and html != og:
        return False
    declared = html or og
    return declared is not None and declared != ENGLISH and declared not in language.labels


def page_languages(
    html_langs: Iterable[str | None], og_locales: Iterable[str | None], page_urls: Iterable[str | None]
) -> list[PageLanguage]:
    """:func:`page_language` per row; computed once per distinct (lang, locale, host)."""
    seen: dict[tuple, PageLanguage] = {}
    out = []
    for html_lang, og_locale, page_url in zip(html_langs, og_locales, page_urls, strict=True):
        try:
            host = urlsplit(page_url).hostname if page_url else None
        except ValueError:
            host = None
        key = (html_lang, og_locale, host)
        if key not in seen:
            seen[key] = page_language(html_lang, og_locale, host)
        out.append(seen[key])
    return out


def host_of(url: str | None) -> str | None:
    """The lower-case host of a URL; None when it has none or cannot be parsed."""
    if not url:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _majority(counts: Counter) -> str | None:
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def with_site_priors(
    priors: Sequence[PageLanguage],
    page_urls: Sequence[str | None],
    text_votes: Sequence[str | None] | None = None,
) -> list[PageLanguage]:
    """``priors`` (one per row) with the rows that have none filled from their site (rule 3 of the module
    docstring): the majority of the host's pages that have a prior (each page counted once), else the majority of
    the host's ``text_votes`` (one per row, None for no vote)."""
    hosts = [host_of(url) for url in page_urls]
    declared: dict[str, Counter] = {}
    seen_pages: set[str] = set()
    for prior, host, url in zip(priors, hosts, page_urls, strict=True):
        if prior.code is not None and host is not None and url not in seen_pages:
            seen_pages.add(url)
            declared.setdefault(host, Counter())[prior.code] += 1
    voted: dict[str, Counter] = {}
    for vote, host in zip(text_votes or [None] * len(priors), hosts, strict=True):
        if vote is not None and host is not None:
            voted.setdefault(host, Counter())[vote] += 1
    out = []
    for prior, host in zip(priors, hosts, strict=True):
        if prior.code is None and host is not None:
            by_pages = _majority(declared.get(host, Counter()))
            if by_pages is not None:
                prior = PageLanguage(by_pages, "site")
            else:
                by_texts = _majority(voted.get(host, Counter()))
                if by_texts is not None:
                    prior = PageLanguage(by_texts, "site_text")
        out.append(prior)
    return out
