"""Decode an HTML page's bytes as a browser would: a BOM, the HTTP header's charset, ``<meta>``, detection.

Order (WHATWG Encoding "decode" and the HTML encoding sniffing algorithm):

1. A byte order mark (UTF-8, UTF-16BE, UTF-16LE) wins over everything, the HTTP header included.
2. The ``charset`` parameter of the ``Content-Type`` header.
3. ``<meta charset>`` / ``<meta http-equiv="Content-Type">`` in the first :data:`_META_SNIFF_BYTES` bytes; a
   UTF-16 label there means UTF-8 (the tag was read as ASCII) and ``x-user-defined`` means windows-1252.
4. Detection: strict UTF-8, else charset_normalizer's guess (only an encoding the web uses), else UTF-8 with
   replacement characters.

Only labels of the WHATWG Encoding Standard count (``whatwg_encodings.json``: the standard's "Names and labels"
table as data, 228 labels of 40 encodings): a label that is not one, even when Python has a codec by that name
(``rot13``, ``base64``, ``hex``, ``zlib``, ``idna``, ``punycode``, ``undefined``, ``utf-7``, ``utf-32``, ...), is
ignored and the next step decides, as browsers do. Each WHATWG encoding maps to the Python codec that decodes it
(:data:`PYTHON_CODECS`); the ``replacement`` encoding (the labels of ISO-2022-KR, ISO-2022-CN and HZ, encodings
used to smuggle markup past filters) decodes any page to a single U+FFFD, as in browsers.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import charset_normalizer

# Only the start of a page is searched for <meta charset>, as browsers do (HTML spec: 1024 bytes; be lenient).
_META_SNIFF_BYTES = 4096
# The charset parameter inside a <meta> tag or a Content-Type value. Linear: one whitespace-and-quote run before
# the label (possessive), where the old pattern had two whitespace runs around an optional quote (quadratic).
_CHARSET_PARAM = r"""charset\s*=[\s"']*+([A-Za-z0-9_.:-]+)"""
_META_CHARSET = re.compile(_CHARSET_PARAM.encode(), re.IGNORECASE)
_HEADER_CHARSET = re.compile(_CHARSET_PARAM, re.IGNORECASE | re.ASCII)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF16_LE, "utf-16-le"))
WHATWG_ENCODINGS_FILE = Path(__file__).with_name("whatwg_encodings.json")
REPLACEMENT = "replacement"
# WHATWG encoding name -> the Python codec that decodes it (a superset where the standard's decoder is one:
# gbk reads as gb18030, big5 as Big5-HKSCS, shift_jis as cp932, euc-kr as cp949, windows-874 as cp874).
PYTHON_CODECS: dict[str, str] = {
    "utf-8": "utf-8",
    "ibm866": "cp866",
    **{f"iso-8859-{n}": f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)},
    "iso-8859-8-i": "iso8859-8",  # the same characters; "-i" only says the text is in logical order
    "koi8-r": "koi8-r",
    "koi8-u": "koi8-u",
    "macintosh": "mac-roman",
    "windows-874": "cp874",
    **{f"windows-{n}": f"cp{n}" for n in range(1250, 1259)},
    "x-mac-cyrillic": "mac-cyrillic",
    "gbk": "gb18030",
    "gb18030": "gb18030",
    "big5": "big5hkscs",
    "euc-jp": "euc_jp",
    "iso-2022-jp": "iso2022_jp",
    "shift_jis": "cp932",
    "euc-kr": "cp949",
    REPLACEMENT: REPLACEMENT,
    "utf-16be": "utf-16-be",
    "utf-16le": "utf-16-le",
    # Private-use characters for bytes 0x80-0xFF; HTML reads the label as windows-1252 in <meta>, and so do we
    # everywhere (the private-use characters would carry no text).
    "x-user-defined": "cp1252",
}


def _load_labels() -> dict[str, str]:
    """Label -> WHATWG encoding name, from the standard's table."""
    table = json.loads(WHATWG_ENCODINGS_FILE.read_text(encoding="utf-8"))
    return {
        label: encoding["name"] for group in table for encoding in group["encodings"] for label in encoding["labels"]
    }


WHATWG_LABELS: dict[str, str] = _load_labels()
# The Python codecs detection may answer with (what the web's encodings decode as), by canonical codec name.
_DETECTABLE = {codecs.lookup(codec).name: codec for codec in PYTHON_CODECS.values() if codec != REPLACEMENT}


def whatwg_encoding(label: str | bytes | None) -> str | None:
    """The WHATWG encoding a label names (WHATWG "get an encoding": ASCII whitespace trimmed, ASCII lowercased),
    or None when it is not a label of the standard."""
    if label is None:
        return None
    if isinstance(label, bytes):
        if not label.isascii():
            return None
        label = label.decode("ascii")
    if not label.isascii():
        return None
    return WHATWG_LABELS.get(label.strip("\t\n\f\r ").lower())


def _codec_name(label: str | bytes | None) -> str | None:
    """The Python codec (canonical name) for a WHATWG label, ``"replacement"``, or None if it is not a label."""
    encoding = whatwg_encoding(label)
    if encoding is None:
        return None
    codec = PYTHON_CODECS[encoding]
    return codec if codec == REPLACEMENT else codecs.lookup(codec).name


def _meta_label(body: bytes) -> bytes | None:
    """The first charset label in a ``<meta>`` tag of the page's start. Each tag runs from ``<meta`` to the next
    ``>`` and the scan goes on after it, so the search is linear (a pattern that looked for the label from every
    ``<meta`` through a lazy run took quadratic time on a page of unclosed ``<meta`` tags)."""
    head = body[:_META_SNIFF_BYTES]
    lowered = head.lower()
    at = lowered.find(b"<meta")
    while at >= 0:
        end = lowered.find(b">", at)
        end = len(head) if end < 0 else end
        match = _META_CHARSET.search(head, at + 5, end)
        if match is not None:
            return match.group(1)
        at = lowered.find(b"<meta", end)
    return None


def _declared_charset(body: bytes, content_type: str | None) -> tuple[str | None, str, int]:
    """``(codec, charset_source, bytes to skip)`` from a BOM, the header or ``<meta>``; codec None if undeclared."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, "bom", len(bom)
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        name = _codec_name(match.group(1)) if match else None
        if name:
            return name, "http_header", 0
    label = _meta_label(body)
    name = _codec_name(label) if label else None
    if name and name.startswith("utf-16"):
        # A page whose <meta> can be read as ASCII is not UTF-16 (HTML spec rule).
        name = "utf-8"
    if name:
        return name, "meta", 0
    return None, "detected", 0


def _decode(payload: bytes, codec: str) -> str:
    """``payload`` in ``codec`` with replacement characters; the replacement encoding gives one U+FFFD."""
    if codec == REPLACEMENT:
        return "\ufffd" if payload else ""
    return payload.decode(codec, errors="replace")


def _detected_codec(name: str | None) -> str | None:
    """The codec to decode with for a detector's answer: one the web's encodings decode as, else None."""
    if not name:
        return None
    for label in (name, name.replace("_", "-")):
        codec = _codec_name(label)
        if codec is not None and codec != REPLACEMENT:
            return codec
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    codec = _codec_name(canonical) or _DETECTABLE.get(canonical)
    return None if codec == REPLACEMENT else codec


def _detect(body: bytes) -> tuple[str, str, str]:
    """Decode an undeclared page: strict UTF-8, else charset_normalizer's first guess that is a web encoding,
    else UTF-8 with replacements."""
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    for match in charset_normalizer.from_bytes(body):
        name = _detected_codec(match.encoding)
        if name:
            return body.decode(name, errors="replace"), name, "detected"
    return body.decode("utf-8", errors="replace"), "utf-8", "fallback"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Decode a page; returns ``(text, charset, charset_source)``."""
    name, source, skip = _declared_charset(body, content_type)
    if name is None:
        return _detect(body)
    return _decode(body[skip:], name), name, source


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
        text = _decode(payload, name)
    # selectolax encodes a str argument exactly so.
    return text.encode("utf-8", errors="ignore"), name, source
