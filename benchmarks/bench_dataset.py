"""Near-duplicate search for the train/test split (``near_duplicate_pairs``: blocked numpy all-pairs XOR +
popcount) against a multi-index band join (pigeonhole: ``max_distance + 1`` bit bands, pairs sharing a band value
are candidates), the usual sub-quadratic design.

Both find exactly the same pairs (asserted); inputs are random 64-bit dHashes with 10 % near-duplicate copies
(1–6 flipped bits); the threshold is the default 8 bits.
"""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from benchmarks.harness import Row, compare, measure
from mella_assets.lib.dataset import SplitPolicy, near_duplicate_pairs


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


def run(quick: bool) -> list[Row]:
    n = 5_000 if quick else 40_000
    hexes = _hashes(n)
    threshold = SplitPolicy.max_distance
    assert sorted(near_duplicate_pairs(hexes, threshold)) == sorted(band_join_pairs(hexes, threshold))
    runs = 3 if quick else 5

    def ours() -> int:
        near_duplicate_pairs(hexes, threshold)
        return n

    def baseline() -> int:
        band_join_pairs(hexes, threshold)
        return n

    return [
        compare(
            "dataset near-duplicate search",
            "hashes/s",
            measure(ours, runs=runs),
            measure(baseline, runs=runs),
            "multi-index band join (polars)",
            hashes=n,
            max_distance=threshold,
        )
    ]
