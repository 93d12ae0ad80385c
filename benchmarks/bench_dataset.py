"""The dataset stage: merging, dedup and split assignment of SFT records, and its near-duplicate search.

1. ``build_sft_records`` (polars + DuckDB) on 1,000,000 candidate records of one language (60 % know, 40 %
   ling, over 50,000 images of which 10 % are near-duplicate copies; 1 % empty answers) against a pure-Python
   implementation of the same steps (``benchmarks/dataset_baseline.py``); both give the same records (asserted
   on a 100,000-row input of the same kind). rows/s = candidate records per second.
2. ``near_duplicate_pairs`` (tiled numpy all-pairs XOR + popcount) against a multi-index band join (pigeonhole:
   ``max_distance + 1`` bit bands, pairs sharing a band value are candidates), the usual sub-quadratic design.
   Both find exactly the same pairs (asserted); inputs are random 64-bit dHashes with 10 % near-duplicate copies
   (1–6 flipped bits); the threshold is the default 8 bits.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import polars as pl

from benchmarks.dataset_baseline import python_build_sft_records
from benchmarks.harness import Row, compare, measure
from mella_assets.dataset.build import SplitPolicy, build_sft_records, near_duplicate_pairs
from mella_assets.languages import LANGUAGES

# Czech words and one with quotes, so the conversations' JSON escaping is exercised.
WORDS = ["hrad", "most", "řeka", "kostel", "náměstí", "zima", "léto", "staré", "město", "tramvaj"]
WORDS += ["večer", "ráno", "socha", "zahrada", "palác", '"Vltava"', "les", "hora", "vesnice", "trh"]

CZECH = LANGUAGES["cs"]


def _hashes(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = [rng.getrandbits(64) for _ in range(n - n // 10)]
    copies = [v ^ sum(1 << b for b in rng.sample(range(64), rng.randint(1, 6))) for v in base[: n // 10]]
    return [f"{v:016x}" for v in base + copies]


def band_join_pairs(hexes: list[str], max_distance: int) -> list[tuple[int, int]]:
    """Multi-index hashing: candidates share one of ``max_distance + 1`` bands (polars self-join), then verified."""
    values = np.array([int(h, 16) for h in hexes], dtype=np.uint64)
    bands = max_distance + 1
    widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
    frames, shift = [], 0
    index = np.arange(len(values), dtype=np.int64)
    for width in widths:
        keys = (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        frame = pl.DataFrame({"key": keys, "i": index})
        frames.append(frame.join(frame, on="key", suffix="_j").filter(pl.col("i") < pl.col("i_j")).select("i", "i_j"))
        shift += width
    candidates = pl.concat(frames).unique()
    left, right = candidates["i"].to_numpy(), candidates["i_j"].to_numpy()
    close = np.bitwise_count(values[left] ^ values[right]) <= max_distance
    return list(zip(left[close].tolist(), right[close].tolist(), strict=True))


def candidate_frames(rows: int, images: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(d_know, d_ling) with ``rows`` records in all (60 % know) over ``images`` images, built column-wise."""
    rng = np.random.default_rng(seed)
    shas = pl.Series([hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(images)])
    values = rng.integers(0, 2**63, images, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, images, np.uint64)
    copies = images // 10
    flips = np.uint64(1) << rng.integers(0, 64, copies).astype(np.uint64)
    values[images - copies :] = values[rng.integers(0, images // 2, copies)] ^ flips
    phashes = pl.Series([f"{v:016x}" for v in values.tolist()])
    words = pl.Series(WORDS)

    def sentence(n_rows: int, n_words: int) -> pl.Series:
        picks = [words.gather(rng.integers(0, len(WORDS), n_rows)) for _ in range(n_words)]
        text = pl.DataFrame(picks, schema=[f"w{k}" for k in range(n_words)]).select(
            pl.concat_str(pl.all(), separator=" ")
        )
        empty = pl.Series(rng.random(n_rows) < 0.01)
        return text.to_series().zip_with(~empty, pl.Series([" "] * n_rows))

    n_know = rows * 6 // 10
    picked = rng.integers(0, images, rows)
    image = pl.DataFrame({"image_sha256": shas.gather(picked), "phash": phashes.gather(picked)}).with_columns(
        pl.format("images/{}/{}.jpg", pl.col("image_sha256").str.slice(0, 2), pl.col("image_sha256")).alias("image_key")
    )
    domain = pl.Series(rng.integers(0, 200, n_know)).cast(pl.String)
    know = image.head(n_know).with_columns(
        sentence(n_know, 5).alias("alt_text"),
        pl.format("https://site{}.example/page/{}", domain, pl.int_range(n_know)).alias("page_url"),
        pl.format("site{}.example", domain).alias("domain"),
        pl.format("https://cdn.example/{}.jpg", pl.col("image_sha256").str.slice(0, 16)).alias("image_url"),
    )
    # every 10th know row repeats an earlier record exactly (the same alt on two pages): dropped as a duplicate
    repeat = pl.int_range(pl.len()) % 10 == 9
    know = know.with_columns(
        pl.when(repeat).then(pl.col(c).shift(1)).otherwise(pl.col(c)).alias(c)
        for c in ("alt_text", "image_sha256", "phash", "image_key")
    )
    ling = image.tail(rows - n_know).with_columns(
        sentence(rows - n_know, 12).alias("text"), pl.lit("a photo").alias("caption_en")
    )
    return know, ling


def run(quick: bool) -> list[Row]:
    return [_records_row(quick), _near_duplicate_row(quick)]


def _records_row(quick: bool) -> Row:
    rows, images = (100_000, 10_000) if quick else (1_000_000, 50_000)
    # Same records from both, checked on the quick-size input (the comparison at 1M rows costs a minute).
    check_know, check_ling = candidate_frames(100_000, 10_000)
    columns = ["id", "source", "split_group", "split", "prompt", "conversation"]
    expected = python_build_sft_records(check_know.to_dicts(), check_ling.to_dicts(), "cs")
    assert build_sft_records(check_know, check_ling, CZECH).records.select(columns).to_dicts() == expected
    know, ling = candidate_frames(rows, images)
    know_rows, ling_rows = know.to_dicts(), ling.to_dicts()
    records_out = build_sft_records(know, ling, CZECH).records.height
    runs = 5

    def ours() -> int:
        build_sft_records(know, ling, CZECH)
        return rows

    def baseline() -> int:
        python_build_sft_records(know_rows, ling_rows, "cs")
        return rows

    # No warm-up run: each run is seconds long and its first run is no colder than the others.
    return compare(
        "dataset dedup + split (build_sft_records)",
        "rows/s",
        measure(ours, runs=runs, warmup=0),
        measure(baseline, runs=runs, warmup=0),
        "pure Python (dicts, hashlib, json)",
        rows=rows,
        images=images,
        records_out=records_out,
    )


def _near_duplicate_row(quick: bool) -> Row:
    n = 5_000 if quick else 20_000
    hexes = _hashes(n)
    threshold = SplitPolicy.max_distance
    assert sorted(near_duplicate_pairs(hexes, threshold)) == sorted(band_join_pairs(hexes, threshold))
    runs = 5

    def ours() -> int:
        near_duplicate_pairs(hexes, threshold)
        return n

    def baseline() -> int:
        band_join_pairs(hexes, threshold)
        return n

    return compare(
        "dataset near-duplicate search",
        "hashes/s",
        measure(ours, runs=runs),
        measure(baseline, runs=runs),
        "multi-index band join (polars)",
        hashes=n,
        max_distance=threshold,
    )
