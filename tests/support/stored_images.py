"""Small distinct PNG images stored in a lake with their ``images`` rows (language cs), for the model stages."""

from __future__ import annotations

import hashlib
import io

import polars as pl
from PIL import Image

from mella_assets.know.images import image_key
from mella_assets.lib.lake import LakeStore


def store_png_images(root, count: int, red_step: int) -> list[str]:
    """``count`` PNGs (40 × 32+i, red ``red_step`` × i) under their sha256 and as cs's ``images`` table; their
    sha256s in order."""
    store, shas = LakeStore(root), []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 32 + i), (red_step * i, 90, 30)).save(buffer, format="PNG")
        sha = hashlib.sha256(buffer.getvalue()).hexdigest()
        store.put_bytes(image_key(sha, "png"), buffer.getvalue())
        shas.append(sha)
    urls = [f"https://a.cz/{sha}" for sha in shas]
    keys = [image_key(sha, "png") for sha in shas]
    store.write_table("images", "cs", pl.DataFrame({"image_url": urls, "image_sha256": shas, "image_key": keys}))
    return shas
