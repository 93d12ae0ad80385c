"""The in-memory D_know recipe the ``d_know`` asset used before it moved to DuckDB (know/d_know_build.py), kept as
the reference that tests/test_d_know_duckdb.py compares it with and the baseline of benchmarks/bench_d_know.py."""

from __future__ import annotations

import polars as pl

from mella_assets.know.alt_kind import HEADLINE_OVER_MIX, cap_headlines, content_ranks
from mella_assets.languages import Language
from mella_assets.lib.text import keywords
from mella_assets.tables import D_KNOW


def reference_d_know(
    pairs: pl.DataFrame, images: pl.DataFrame, language: Language, max_headline_share: float
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The in-memory recipe of the `d_know` asset before it moved to DuckDB, verbatim: the whole language's pairs
    and images as polars frames; returns the table and the dropped counts of its metadata."""
    pairs = pairs.sort("page_url", maintain_order=True)
    fetched = images.drop("language").unique("image_url", keep="first", maintain_order=True)
    joined = pairs.select("image_url", "alt_text", "page_url", "domain", "alt_kind").join(
        fetched, on="image_url", how="inner", maintain_order="left"
    )
    frame = (
        joined.unique(["image_sha256", "alt_text"], keep="first", maintain_order=True)
        .with_columns(
            pl.lit(language.code).alias("language"),
            pl.col("alt_text")
            .map_elements(lambda text: keywords(text, language), return_dtype=pl.List(pl.String))
            .alias("keywords"),
        )
        .select(
            "language",
            "image_sha256",
            "image_key",
            "phash",
            "alt_text",
            "keywords",
            "page_url",
            "domain",
            "image_url",
            "alt_kind",
        )
    )
    frame, over_mix = cap_headlines(frame, max_headline_share, content_ranks(frame))
    dropped = {
        "no_stored_image": pairs.height - pairs.join(fetched, on="image_url", how="semi").height,
        "duplicate_pair": joined.height - frame.height - over_mix.height,
        HEADLINE_OVER_MIX: over_mix.height,
    }
    return D_KNOW.conform(frame), dropped
