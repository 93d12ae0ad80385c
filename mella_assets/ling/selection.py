"""Which validated images of a language get an English caption (the input of D_ling).

All distinct images, or a deterministic sample: every image gets a rank from a hash of (seed, sha256), so the
sample does not depend on crawl order and grows stably (raising the limit keeps every image chosen before).
A per-domain cap keeps one site from dominating: within each domain only the ``per_domain_cap`` best-ranked
images are eligible. An image found on several domains counts for the alphabetically first one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

UNKNOWN_DOMAIN = ""


@dataclass(frozen=True)
class ImageSelection:
    """The chosen images (``image_sha256``, ``image_key``, ``domain``; sorted by sha256) and what was left out."""

    chosen: pl.DataFrame
    candidates: int
    dropped_by_domain_cap: int
    dropped_by_limit: int

    @property
    def per_domain(self) -> dict[str, int]:
        """Chosen images per domain, sorted by domain."""
        counts = self.chosen.group_by("domain").len().sort("domain")
        return dict(zip(counts["domain"].to_list(), counts["len"].to_list(), strict=True))


def select_images_for_captioning(
    images: pl.DataFrame,
    pairs: pl.DataFrame | None = None,
    limit: int = 0,
    per_domain_cap: int = 0,
    seed: int = 0,
) -> ImageSelection:
    """Distinct images of ``images`` (columns ``image_url``, ``image_sha256``, ``image_key``); domains come from
    ``pairs`` (``image_url``, ``domain``: the alt-text pairs the images were fetched for). ``limit`` and
    ``per_domain_cap`` of 0 mean no limit; the result does not depend on the row order of either input."""
    frame = images.select("image_url", "image_sha256", "image_key")
    if pairs is not None and {"image_url", "domain"} <= set(pairs.columns) and not pairs.is_empty():
        domains = pairs.select("image_url", pl.col("domain").cast(pl.String)).unique()
        frame = frame.join(domains, on="image_url", how="left")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("domain"))
    distinct = (
        frame.with_columns(pl.col("domain").fill_null(UNKNOWN_DOMAIN))
        .group_by("image_sha256")
        .agg(pl.col("image_key").min(), pl.col("domain").min())
    )
    # sha256 rather than polars' hash: the rank (so the sample) must stay the same across library versions.
    ranks = [hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest() for sha in distinct["image_sha256"]]
    distinct = distinct.with_columns(pl.Series("_rank", ranks, dtype=pl.String)).sort("_rank", "image_sha256")
    candidates = distinct.height
    if per_domain_cap > 0:
        capped = distinct.filter(
            pl.int_range(pl.len()).over("domain", order_by=["_rank", "image_sha256"]) < per_domain_cap
        )
    else:
        capped = distinct
    limited = capped.head(limit) if limit > 0 else capped
    chosen = limited.sort("image_sha256").select("image_sha256", "image_key", "domain")
    return ImageSelection(
        chosen=chosen,
        candidates=candidates,
        dropped_by_domain_cap=candidates - capped.height,
        dropped_by_limit=capped.height - limited.height,
    )
