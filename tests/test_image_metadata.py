"""Stored images are pixels only (issue #16): a polyglot (HTML or script in a JPEG comment, an APPn segment, EXIF,
an ICC profile, PNG text chunks, a GIF comment, WebP XMP) is stored without its payload, and only the formats in
the allow-list are ever decoded."""

from __future__ import annotations

import io
import random
import struct
import warnings

import pytest
from PIL import Image, features

from mella_assets.know.images import ALLOWED_FORMATS, ImageReject, ValidatedImage, validate_image
from support.bad_inputs import POLYGLOT_CARRIERS, encode, jpeg_segments, photo, polyglot

SEED = 16
# Segments a stored JPEG may have before its pixels: JFIF (APP0), quantisation and Huffman tables, frame, restart
# interval, start of scan.
PIXEL_SEGMENTS = {0xE0, 0xDB, 0xC4, 0xC0, 0xC1, 0xC2, 0xDD, 0xDA}
PAYLOAD_TEMPLATES = (
    "<html><body><script>alert('{marker}')</script></body></html>",
    "<script src=//evil.example/{marker}.js></script>",
    '<img src=x onerror="alert(`{marker}`)">',
    "<?php system($_GET['{marker}']); ?>",
    "<svg onload=\"fetch('//evil.example/{marker}')\"/>",
    "javascript:alert('{marker}')//",
    "<!--{marker}--><iframe src=//evil.example></iframe>",
)


def payloads(count: int) -> list[tuple[str, bytes]]:
    """``(marker, payload)``: the templates with a seeded random marker, and random filler of varying length."""
    rng = random.Random(SEED)
    out = []
    for i in range(count):
        marker = f"mk{rng.getrandbits(64):016x}"
        filler = "".join(rng.choice("<>\"'=/;:&#% abcXYZ019") for _ in range(rng.randint(0, 400)))
        out.append((marker, (PAYLOAD_TEMPLATES[i % len(PAYLOAD_TEMPLATES)].format(marker=marker) + filler).encode()))
    return out


@pytest.mark.parametrize("carrier", POLYGLOT_CARRIERS)
def test_generated_polyglots_are_stored_without_their_payload(carrier: str):
    for marker, payload in payloads(6):
        data = polyglot(carrier, payload)
        assert marker.encode() in data or carrier in {"png zTXt"}  # the payload is really in the input
        result = validate_image(data)
        assert isinstance(result, ValidatedImage), (carrier, result)
        assert marker.encode() not in result.data and b"<script" not in result.data and b"<?php" not in result.data
        assert set(jpeg_segments(result.data)) <= PIXEL_SEGMENTS, [hex(m) for m in jpeg_segments(result.data)]
        with Image.open(io.BytesIO(result.data)) as stored:
            assert not {"comment", "exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "photoshop"} & set(stored.info)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def rgb_icc_profile(description: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile with the given primaries (D50 XYZ)."""
    text = description.encode("ascii")
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 78
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    white = _xyz(0.9642, 1.0, 0.8249)
    tags = [(b"desc", desc), (b"wtpt", white), (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green))]
    tags += [(b"bXYZ", _xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    tags += [(b"cprt", b"text\0\0\0\0none\0\0\0\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, content in tags:
        content += b"\0" * (-len(content) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(content))
        body += content
    header = struct.pack(">I", offset + len(body)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12
    header += b"acsp" + b"\0" * 28 + white[8:] + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_PRIMARIES = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


@pytest.mark.skipif(not features.check("littlecms2"), reason="Pillow without littlecms")
def test_an_rgb_profile_other_than_srgb_is_converted_then_dropped():
    red, green, blue = SRGB_PRIMARIES
    swapped = rgb_icc_profile("red and green swapped", green, red, blue)  # "red" pixels are green in this space
    data = encode(Image.new("RGB", (100, 80), (255, 0, 0)), "JPEG", quality=95, icc_profile=swapped)
    result = validate_image(data)
    assert isinstance(result, ValidatedImage)
    with Image.open(io.BytesIO(result.data)) as stored:
        r, g, b = stored.getpixel((50, 40))
        assert "icc_profile" not in stored.info
    assert g > 200 and r < 60 and b < 60, (r, g, b)


@pytest.mark.parametrize(
    "profile", [b"", b"\x00" * 10, b"not a profile at all <script>x</script>", random.Random(SEED).randbytes(3000)]
)
def test_a_profile_that_does_not_parse_is_ignored_and_dropped(profile: bytes):
    data = encode(Image.new("RGB", (100, 80), (200, 30, 30)), "PNG", icc_profile=profile or None)
    result = validate_image(data)
    assert isinstance(result, ValidatedImage)
    with Image.open(io.BytesIO(result.data)) as stored:
        assert "icc_profile" not in stored.info and stored.getpixel((50, 40))[0] > 180


def _encoded_in(fmt: str) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # formats Pillow is retiring are still formats
        return encode(photo((96, 80)).convert("RGB"), fmt)


def _savable_formats() -> list[str]:
    Image.init()
    out = []
    for name in sorted(Image.SAVE):
        try:
            _encoded_in(name)
        except Exception:  # a format Pillow cannot write an RGB photo in
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("fmt", _savable_formats())
def test_only_allowed_formats_are_decoded(fmt: str):
    data = _encoded_in(fmt)
    result = validate_image(data)
    if fmt in ALLOWED_FORMATS or (fmt == "MPO" and "JPEG" in ALLOWED_FORMATS):
        assert isinstance(result, ValidatedImage), (fmt, result)
    else:
        assert isinstance(result, ImageReject) and result.reason in {"unsupported_format", "not_decodable"}, fmt
