"""Charset labels (issue #16): only the WHATWG Encoding Standard's labels name an encoding, a BOM wins over the
HTTP header, and no label (every name Python has a codec alias for, every WHATWG label) ever raises."""

from __future__ import annotations

import codecs
import encodings.aliases
import json
import random

import pytest

from mella_assets.crawl.html import decode_html, extract_page, extract_warc
from mella_assets.crawl.html.charset import (
    PYTHON_CODECS,
    REPLACEMENT,
    WHATWG_ENCODINGS_FILE,
    WHATWG_LABELS,
    whatwg_encoding,
)
from mella_assets.crawl.warc import WarcStats
from support.bad_inputs import good_records, warc_record

ALT = "Pražský hrad"
PAGE = f'<html><body><img src="/a.jpg" alt="{ALT}"></body></html>'
# Every name Python knows a codec by: the aliases and the codec modules they point at.
PYTHON_CODEC_NAMES = sorted(
    {*encodings.aliases.aliases, *encodings.aliases.aliases.values()}
    | {"rot13", "rot_13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "idna", "punycode", "undefined", "utf-7"}
    | {"raw_unicode_escape", "unicode_escape", "mbcs", "oem", "palmos", "utf-8-sig", "utf-32", "charmap"}
)


def test_the_label_table_is_the_standards_forty_encodings_and_each_decodes():
    table = json.loads(WHATWG_ENCODINGS_FILE.read_text(encoding="utf-8"))
    names = [encoding["name"] for group in table for encoding in group["encodings"]]
    assert len(names) == len(set(names)) == 40 and len(WHATWG_LABELS) == 228
    assert set(PYTHON_CODECS) == set(names)
    noise = random.Random(16).randbytes(4096)
    for name, codec in PYTHON_CODECS.items():
        if codec != REPLACEMENT:
            assert codecs.lookup(codec)._is_text_encoding, name
            assert isinstance(noise.decode(codec, errors="replace"), str), name


@pytest.mark.parametrize("where", ["meta", "header"])
def test_no_python_codec_name_as_a_label_raises_and_non_web_ones_are_ignored(where: str):
    """Every Python codec alias as the charset: the page decodes; a name that is no WHATWG label changes nothing
    (the page is detected as UTF-8, as with no label at all)."""
    for name in PYTHON_CODEC_NAMES:
        for label in (name, name.upper(), f" {name}\t", f'"{name}"'):
            meta = f'<meta charset="{label}">' if where == "meta" else ""
            content_type = f"text/html; charset={label}" if where == "header" else "text/html"
            page = extract_page((meta + PAGE).encode(), "https://example.invalid/", content_type)
            if whatwg_encoding(name) is None:
                assert (page.charset, page.charset_source, page.images[0].alt_raw) == ("utf-8", "detected", ALT), label


@pytest.mark.parametrize("label", sorted(WHATWG_LABELS))
def test_every_whatwg_label_decodes_without_an_exception(label: str):
    body = (f'<meta charset="{label}">' + PAGE).encode() + random.Random(label).randbytes(64)
    for content_type in (f"text/html; charset={label.upper()}", "text/html"):
        text, codec, source = decode_html(body, content_type)
        assert isinstance(text, str) and source in {"http_header", "meta"}
        encoding = WHATWG_LABELS[label]
        if encoding == REPLACEMENT and source == "http_header":
            assert (text, codec) == ("\ufffd", REPLACEMENT)


@pytest.mark.parametrize("label", ["rot13", "base64", "hex", "zlib", "idna", "punycode", "undefined", "utf-7"])
def test_a_non_web_label_in_a_warc_record_costs_nothing(tmp_path, label: str):
    path = tmp_path / "labels.warc.gz"
    record = warc_record("https://example.invalid/p", PAGE.encode(), f"text/html; charset={label}")
    path.write_bytes(record + good_records(1)[0])
    stats = WarcStats()
    frame = extract_warc(path, stats)
    assert (frame.height, stats.malformed) == (2, 0)
    assert frame["charset"].to_list() == ["utf-8", "utf-8"]


def test_utf7_is_refused_so_its_escapes_stay_text():
    body = b'<meta charset="utf-7"><img src="/a.jpg" alt="+ADw-script+AD4-alert(1)+ADw-/script+AD4-">'
    page = extract_page(body, "https://example.invalid/", "text/html; charset=utf-7")
    assert page.images[0].alt_raw == "+ADw-script+AD4-alert(1)+ADw-/script+AD4-"
    assert "utf-7" not in WHATWG_LABELS and whatwg_encoding("UTF-7") is None


@pytest.mark.parametrize(
    ("bom", "codec", "expected"),
    [
        (codecs.BOM_UTF8, "utf-8", "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
    ],
)
@pytest.mark.parametrize("header", ["windows-1252", "koi8-r", "utf-8", "iso-2022-kr", "shift_jis"])
def test_a_bom_wins_over_the_http_header(bom: bytes, codec: str, expected: str, header: str):
    page = extract_page(bom + PAGE.encode(codec), "https://example.invalid/", f"text/html; charset={header}")
    assert (page.charset, page.charset_source, page.images[0].alt_raw) == (expected, "bom", ALT)


def test_whatwg_get_an_encoding_trims_ascii_whitespace_and_lowercases_ascii_only():
    assert whatwg_encoding(" \tLATIN1\n") == "windows-1252"
    assert whatwg_encoding(b"Shift_JIS") == "shift_jis"
    assert whatwg_encoding("\u212aoi8-r") is None  # KELVIN SIGN is not "K"
    assert whatwg_encoding("utf-8\u00a0") is None  # NBSP is not ASCII whitespace
    assert whatwg_encoding("cp949") is None and whatwg_encoding("windows-949") == "euc-kr"


def test_meta_rules_utf16_means_utf8_and_x_user_defined_means_windows_1252():
    for label, codec in (("utf-16", "utf-8"), ("utf-16be", "utf-8"), ("x-user-defined", "cp1252")):
        page = extract_page((f'<meta charset="{label}">' + PAGE).encode(), "https://example.invalid/")
        assert (page.charset, page.charset_source) == (codec, "meta"), label


def test_the_replacement_encoding_leaves_no_content():
    for label in ("iso-2022-kr", "ISO-2022-CN", "hz-gb-2312", "csiso2022kr", "replacement"):
        page = extract_page(PAGE.encode(), "https://example.invalid/", f"text/html; charset={label}")
        assert (page.charset, page.images) == (REPLACEMENT, []), label
