"""Validate fetched image bytes and re-encode them as RGB JPEG; perceptual hashes for near-duplicates.

Never trusts a file name, extension or content type: Pillow reads the bytes. The pixel count comes from the
header and is checked before any decoding (decompression bombs).

Reject reasons (stable): ``pixel_bomb``, ``not_decodable``, ``unsupported_format`` (SVG: vector markup, not
pixels; rendering it would run an XML parser on hostile input), ``too_small``, ``bad_aspect_ratio``; and from
:func:`mark_duplicates`: ``duplicate_image``, ``near_duplicate_image``.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

JPEG_QUALITY = 90
DEFAULT_MAX_ASPECT_RATIO = 6.0  # wider than 6:1 is a banner or a divider, not a photo to describe
DEFAULT_NEAR_DUPLICATE_BITS = 4  # dHash distance: measured 0-2 for re-encodes/resizes, >20 for other pictures
_SVG_SNIFF = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype svg[^>]*>\s*)?<svg[\s>]", re.I | re.S)
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
    """Decode ``data``, orient, check size, convert to RGB, downscale and re-encode as JPEG (no EXIF)."""
    if _SVG_SNIFF.match(data[:4096]):
        return ImageReject("unsupported_format", "svg")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below decides; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Image.open reads only the header; decoding starts at load().
            image = Image.open(io.BytesIO(data))
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
        image = _to_rgb(image)
        if max(image.size) > max_side_out:
            # Bicubic, as the VLM processors resample (lib/vlm.py): two thirds of the taps of Lanczos; resampling
            # was ~60 % of this function's time (measured in benchmarks/bench_images.py).
            image.thumbnail((max_side_out, max_side_out), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False)
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
    for a dHash within ``max_bits`` of an earlier kept image. Quadratic in kept images per language, which are
    thousands, not millions; a BK-tree would be the next step."""
    seen_sha: set[str] = set()
    kept: list[tuple[int, str]] = []
    out: list[tuple[str | None, str | None]] = []
    for sha, phash in zip(shas, phashes, strict=True):
        if sha in seen_sha:
            out.append(("duplicate_image", sha))
            continue
        value = int(phash, 16)
        match = next((other for bits, other in kept if (bits ^ value).bit_count() <= max_bits), None)
        if match is not None:
            out.append(("near_duplicate_image", match))
            continue
        seen_sha.add(sha)
        kept.append((value, sha))
        out.append((None, None))
    return out
