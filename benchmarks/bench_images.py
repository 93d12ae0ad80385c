"""Image validation (``validate_image``: header-only pixel cap, decode, orient, RGB, downscale to 1024 px,
JPEG re-encode, sha256 and dHash) against a naive Pillow path doing the same job (``Image.open().load()``,
``convert("RGB")``, ``resize`` to the same box, JPEG save, hashlib sha256, the same dHash).

Input: photo-like pictures (smooth colour fields, shapes, sensor noise) of 800×600 to 2000×1500 and a few of
phone-camera size (4000×3000), 75 % JPEG (quality 85) and 25 % PNG, generated deterministically. One process,
one thread: images/s here is images per second per core.
"""

from __future__ import annotations

import hashlib
import io
import random

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.harness import Row, compare, measure
from mella_assets.know.images import JPEG_QUALITY, ValidatedImage, dhash, validate_image

SIZES = [(800, 600), (1024, 768), (1280, 960), (1600, 1200), (2000, 1500), (1200, 1600), (4000, 3000)]
# Phone-size originals are common on the web; a fixed share keeps the mix the same at every input size.
WEIGHTS = [4, 4, 4, 3, 3, 2, 1]


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A deterministic photo-like RGB picture: a blurred colour field, shapes and per-pixel noise."""
    rng = random.Random(seed)
    field = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    image = field.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(20, width // 3), y0 + rng.randrange(20, height // 3))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    # sensor noise: a shifted window of one noise tile (drawing fresh noise per picture dominated the set-up)
    dy, dx = rng.randrange(_NOISE.shape[0] - height + 1), rng.randrange(_NOISE.shape[1] - width + 1)
    noisy = np.asarray(image, dtype=np.int16) + _NOISE[dy : dy + height, dx : dx + width]
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


_NOISE = np.random.default_rng(7).integers(-8, 9, (3100, 4100, 3), dtype=np.int16)


def image_set(count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        size = rng.choices(SIZES, WEIGHTS)[0]
        picture = photo(seed * 100_000 + index, size)
        buffer = io.BytesIO()
        if index % 4 == 3:
            picture.save(buffer, "PNG", compress_level=1)
        else:
            picture.save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def naive_validate(data: bytes, max_side_out: int = 1024) -> tuple[str, str]:
    """Full decode, RGB, resize into the box, JPEG re-encode, sha256 and dHash: the textbook version."""
    image = Image.open(io.BytesIO(data))
    image.load()
    image = image.convert("RGB")
    scale = min(1.0, max_side_out / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return hashlib.sha256(out.getvalue()).hexdigest(), dhash(image)


def run(quick: bool = False) -> list[Row]:
    images = image_set(24 if quick else 80)
    checked = [validate_image(data) for data in images]
    assert all(isinstance(c, ValidatedImage) for c in checked)
    assert all(max(c.width, c.height) <= 1024 for c in checked)

    def ours() -> int:
        for data in images:
            validate_image(data)
        return len(images)

    def baseline() -> int:
        for data in images:
            naive_validate(data)
        return len(images)

    megapixels = sum(c.width_in * c.height_in for c in checked) / 1e6
    return [
        compare(
            "image validate + re-encode + hash",
            "images/s/core",
            measure(ours, runs=5),
            measure(baseline, runs=5),
            "naive Pillow full decode + resize",
            images=len(images),
            megapixels_in=round(megapixels, 1),
            jpeg_share=0.75,
        )
    ]
