"""Decode an HTML page's bytes: the charset from the HTTP header, a BOM, ``<meta>`` or detection, in that order."""

from __future__ import annotations

import codecs
import functools
import re

import charset_normalizer

# Only the start of a page is searched for <meta charset>, as browsers do (HTML spec: 1024 bytes; be lenient).
_META_SNIFF_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))

# WHATWG Encoding: labels that mean a superset codec (browsers decode them so) or that Python does not know.
_LABEL_ALIASES = {
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "dos-874": "cp874",
    "iso-8859-11": "cp874",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "windows-949": "cp949",
    "x-cp1250": "cp1250",
    "x-cp1251": "cp1251",
    "gb2312": "gbk",
    "shift_jis": "cp932",
}


@functools.lru_cache(maxsize=256)
def _codec_name(label: str | bytes | None) -> str | None:
    """Python's codec name for a charset label, or None if unknown; Latin-1/ASCII read as windows-1252."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    label = label.strip().strip("\"'").lower()
    label = _LABEL_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    # HTML spec: these labels mean windows-1252, which also defines bytes 0x80-0x9F.
    if name in {"latin-1", "iso8859-1", "ascii"}:
        return "cp1252"
    return name


def _declared_charset(body: bytes, content_type: str | None) -> tuple[str | None, str, int]:
    """``(codec, charset_source, bytes to skip)`` from the header, a BOM or ``<meta>``; codec None if undeclared."""
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        name = _codec_name(match.group(1)) if match else None
        if name:
            return name, "http_header", 0
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, "bom", len(bom)
    match = _META_CHARSET.search(body[:_META_SNIFF_BYTES])
    name = _codec_name(match.group(1)) if match else None
    if name and name.startswith("utf-16"):
        # A page whose <meta> can be read as ASCII is not UTF-16 (HTML spec rule).
        name = "utf-8"
    if name:
        return name, "meta", 0
    return None, "detected", 0


def _detect(body: bytes) -> tuple[str, str, str]:
    """Decode an undeclared page: strict UTF-8, else charset_normalizer's guess, else UTF-8 with replacements."""
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body).best()
    name = _codec_name(best.encoding) if best is not None else None
    if name:
        return body.decode(name, errors="replace"), name, "detected"
    return body.decode("utf-8", errors="replace"), "utf-8", "fallback"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Decode a page; returns ``(text, charset, charset_source)``."""
    name, source, skip = _declared_charset(body, content_type)
    if name is None:
        return _detect(body)
    return body[skip:].decode(name, errors="replace"), name, source


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_for_parser(body: bytes, content_type: str | None) -> tuple[bytes, str, str]:
    """:func:`decode_html`'s text as the UTF-8 bytes lexbor parses, ``(html, charset, charset_source)``.

    UTF-8 is passed through as it is: decoding to ``str`` only for selectolax to encode it back costs about half
    as much as the parse itself."""
    name, source, skip = _declared_charset(body, content_type)
    if name is None:
        if _is_utf8(body):
            return body, "utf-8", "detected"
        text, name, source = _detect(body)
    else:
        payload = body[skip:] if skip else body
        if name == "utf-8":
            # lexbor replaces invalid UTF-8 with U+FFFD exactly as errors="replace" does (tested).
            return payload, name, source
        text = payload.decode(name, errors="replace")
    # selectolax encodes a str argument exactly so.
    return text.encode("utf-8", errors="ignore"), name, source
