"""Validate fetched image bytes and re-encode them as RGB JPEG; perceptual hashes for near-duplicates.

Never trusts a file name, extension or content type: Pillow reads the bytes. The pixel count comes from the
header and is checked before any decoding (decompression bombs).

Only the formats browsers show photos in are opened (:data:`ALLOWED_FORMATS`, Pillow's ``formats=``): a body in
any other format Pillow knows (TIFF, PSD, EPS, ICO, TGA, ...) is ``unsupported_format`` without its decoder ever
running, and SVG (vector markup, not pixels; rendering it would run an XML parser on hostile input) too.

The stored JPEG holds pixels and nothing else: no comment (Pillow would copy a source JPEG's or GIF's comment),
EXIF (its orientation is applied first), XMP, IPTC, PNG text chunks or ICC profile. An RGB image with an ICC
profile other than sRGB is converted to sRGB first, so its colours survive the profile's removal; a profile that
does not parse is ignored. A polyglot (HTML or script in a comment, an APPn segment or a text chunk) is therefore
stored without its payload.

Reject reasons (stable): ``pixel_bomb``, ``not_decodable``, ``unsupported_format``, ``too_small``,
``bad_aspect_ratio``; and from :func:`mark_duplicates`: ``duplicate_image``, ``near_duplicate_image``.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from mella_assets.lib.near_duplicates import BandIndex

JPEG_QUALITY = 90
DEFAULT_MAX_ASPECT_RATIO = 6.0  # wider than 6:1 is a banner or a divider, not a photo to describe
DEFAULT_NEAR_DUPLICATE_BITS = 4  # dHash distance: measured 0-2 for re-encodes/resizes, >20 for other pictures
# The formats a fetched body may be decoded as (Pillow format names; a multi-picture JPEG opens as JPEG and reads
# as MPO). Every other decoder is never run on fetched bytes.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP")
# How far into a body the SVG sniffer looks (an SVG's root element comes after a prolog of a few lines).
SVG_SNIFF_BYTES = 4096
_XML_SPACE = b" \t\n\r\x0b\x0c"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EXT = re.compile(r"^[a-z0-9]{1,5}$")
# What Pillow raises on garbage or truncated input, across formats.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    TypeError,
    IndexError,
    KeyError,
    ZeroDivisionError,
)


@dataclass(frozen=True)
class ValidatedImage:
    """A decodable image re-encoded as JPEG; ``width``/``height``: the stored (oriented, downscaled) size."""

    sha256: str
    phash: str
    width: int
    height: int
    format: str
    mode_in: str
    bytes_in: int
    data: bytes
    ext: str = "jpg"
    width_in: int = 0
    height_in: int = 0


@dataclass(frozen=True)
class ImageReject:
    reason: str
    detail: str


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white and 16-bit/float samples scaled to 8 bits."""
    mode = image.mode
    if mode in {"I", "F"} or mode.startswith("I;16"):
        grey = image.convert("F") if mode == "F" else image.convert("I")
        _low, high = grey.getextrema()
        # 16-bit samples: Pillow's plain convert("L") clips everything above 255 to white.
        if high > 255:
            grey = grey.point(lambda value: value * (1 / 256))
        return grey.convert("L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in {"LA", "PA", "La", "RGBa"} or (mode != "RGBA" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def looks_like_svg(data: bytes) -> bool:
    """True when the body is SVG markup: optional whitespace, ``<?xml ...?>``, comments and ``<!DOCTYPE svg ...>``
    before an ``<svg`` root, within the first :data:`SVG_SNIFF_BYTES` bytes (case-insensitive).

    A scan with ``find`` (linear in the bytes looked at): the regular expression it replaces nested a repeat inside
    a repeat over comments, and a 200-byte body of ``<!--x-->`` took seconds, doubling with every comment."""
    head = data[:SVG_SNIFF_BYTES].lower()
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    at = len(head) - len(head.lstrip(_XML_SPACE))
    if head.startswith(b"<?xml", at):
        end = head.find(b">", at)
        if end < 0:
            return False
        at = end + 1
    while True:
        at = _skip_space(head, at)
        if not head.startswith(b"<!--", at):
            break
        end = head.find(b"-->", at + 4)
        if end < 0:
            return False
        at = end + 3
    if head.startswith(b"<!doctype svg", at):
        end = head.find(b">", at)
        if end < 0:
            return False
        at = _skip_space(head, end + 1)
    return head.startswith(b"<svg", at) and len(head) > at + 4 and head[at + 4 : at + 5] in {*_SPACE_BYTES, b">"}


_SPACE_BYTES = frozenset(bytes([byte]) for byte in _XML_SPACE)


def _skip_space(data: bytes, at: int) -> int:
    while at < len(data) and data[at] in _XML_SPACE:
        at += 1
    return at


def _other_format(data: bytes) -> str | None:
    """The name of a format outside :data:`ALLOWED_FORMATS` whose signature the body starts with (Pillow's own
    signature checks, which read the first 16 bytes and decode nothing), or None."""
    Image.init()
    prefix = data[:16]
    for name, (_factory, accept) in Image.OPEN.items():
        if name in ALLOWED_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name.lower()
        except Exception:  # a signature check that fails on odd bytes is no match
            continue
    return None


def _in_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """An RGB image converted from its ICC profile to sRGB, so that dropping the profile keeps its colours; the
    image itself when it has no profile, an sRGB one, one of another colour space, or one that does not parse."""
    if not icc_profile or image.mode != "RGB":
        return image
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if source.profile.xcolor_space.strip() != "RGB" or "srgb" in (source.profile.profile_description or "").lower():
            return image
        return ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB") or image
    except Exception:  # lcms rejects a malformed profile in several ways; the pixels stay as they are
        return image


@functools.cache
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def dhash(image: Image.Image) -> str:
    """64-bit difference hash as 16 hex digits: grey 9x8, a bit per pixel brighter than its left one."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = grey.tobytes()
    value = 0
    for row in range(8):
        for col in range(8):
            value = (value << 1) | (pixels[row * 9 + col + 1] > pixels[row * 9 + col])
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length: {a!r} vs {b!r}")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def image_key(sha256: str, ext: str) -> str:
    """Lake key ``images/<sha[:2]>/<sha>.<ext>``; refuses anything that is not a hex digest (no traversal)."""
    if not _SHA256.match(sha256) or not _EXT.match(ext):
        raise ValueError(f"not a sha256/extension pair: {sha256!r}, {ext!r}")
    return f"images/{sha256[:2]}/{sha256}.{ext}"


def validate_image(
    data: bytes,
    min_side: int = 64,
    max_pixels: int = 40_000_000,
    max_side_out: int = 1024,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> ValidatedImage | ImageReject:
    """Decode ``data``, orient, check size, convert to RGB (sRGB), downscale and re-encode as JPEG with no metadata."""
    if looks_like_svg(data):
        return ImageReject("unsupported_format", "svg")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below decides; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Image.open reads only the header; decoding starts at load().
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width_in, height_in = image.size
            if width_in * height_in > max_pixels:
                return ImageReject("pixel_bomb", f"{width_in}x{height_in} > {max_pixels} pixels")
            source_format = image.format or "unknown"
            mode_in = image.mode
            if source_format == "JPEG" and max(width_in, height_in) >= 2 * max_side_out:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT, never below the output box: a phone
                # photo decodes and resamples in a fraction of the time (benchmarks/bench_images.py).
                shrink = max(width_in, height_in) / max_side_out
                image.draft(None, (math.ceil(width_in / shrink), math.ceil(height_in / shrink)))
            decoded_size = image.size
            image.load()
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        return ImageReject("pixel_bomb", str(error)[:200])
    except UnidentifiedImageError:
        other = _other_format(data)
        if other is not None:
            return ImageReject("unsupported_format", other)
        return ImageReject("not_decodable", "unknown image format")
    except _DECODE_ERRORS as error:
        return ImageReject("not_decodable", f"{type(error).__name__}: {error}"[:200])
    # The oriented size of the original (a draft decode is smaller; a 90° orientation swaps the sides).
    width, height = (height_in, width_in) if image.size != decoded_size else (width_in, height_in)
    if min(width, height) < min_side:
        return ImageReject("too_small", f"{width}x{height} < {min_side}")
    if max(width, height) > max_aspect_ratio * min(width, height):
        return ImageReject("bad_aspect_ratio", f"{width}x{height} > {max_aspect_ratio:g}:1")
    try:
        icc_profile = image.info.get("icc_profile")
        image = _to_rgb(image)
        if max(image.size) > max_side_out:
            # Bicubic, as the VLM processors resample (lib/vlm.py): two thirds of the taps of Lanczos; resampling
            # was ~60 % of this function's time (measured in benchmarks/bench_images.py).
            image.thumbnail((max_side_out, max_side_out), Image.Resampling.BICUBIC)
        image = _in_srgb(image, icc_profile)
        # Pixels only: Pillow's JPEG encoder copies info["comment"] (a JPEG COM or GIF comment) of the image it
        # saves, so the info goes, and every metadata option is given empty.
        image.info = {}
        out = io.BytesIO()
        image.save(
            out, "JPEG", quality=JPEG_QUALITY, optimize=False, exif=b"", icc_profile=None, comment=None, xmp=None
        )
    except _DECODE_ERRORS as error:
        return ImageReject("not_decodable", f"{type(error).__name__}: {error}"[:200])
    encoded = out.getvalue()
    return ValidatedImage(
        sha256=hashlib.sha256(encoded).hexdigest(),
        phash=dhash(image),
        width=image.width,
        height=image.height,
        format=source_format,
        mode_in=mode_in,
        bytes_in=len(data),
        data=encoded,
        ext="jpg",
        width_in=width,
        height_in=height,
    )


def mark_duplicates(
    shas: list[str], phashes: list[str], max_bits: int = DEFAULT_NEAR_DUPLICATE_BITS
) -> list[tuple[str | None, str | None]]:
    """Per image, in order: ``(reason, canonical_sha)`` — ``(None, None)`` for the first of its kind,
    ``("duplicate_image", sha)`` for the same bytes seen before (another URL), ``("near_duplicate_image", sha)``
    for a dHash within ``max_bits`` of an earlier kept image (the earliest such). The kept images' hashes sit in a
    band index (``lib/near_duplicates.BandIndex``), so an image is compared with the few kept images that share a
    band with it, not with all of them."""
    seen_sha: set[str] = set()
    index = BandIndex(max_bits, len(shas))
    kept: list[str] = []
    out: list[tuple[str | None, str | None]] = []
    for sha, phash in zip(shas, phashes, strict=True):
        if sha in seen_sha:
            out.append(("duplicate_image", sha))
            continue
        value = int(phash, 16)
        match = index.first_within(value)
        if match is not None:
            out.append(("near_duplicate_image", kept[match]))
            continue
        seen_sha.add(sha)
        index.add(value)
        kept.append(sha)
        out.append((None, None))
    return out
