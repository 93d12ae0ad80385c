"""Near-duplicate clusters out of core (``lib/near_duplicates.cluster_images``: DuckDB band joins over a Parquet
file) against the quadratic in-memory clustering it replaced (``near_duplicate_pairs``: tiled numpy all-pairs XOR +
popcount, then union-find), same run.

Inputs: sha256-like keys and random 64-bit dHashes, 10 % of them copies of another with 1–6 bits flipped, in one
Parquet file; threshold = the dataset's default 8 bits. Each measurement runs in a fresh subprocess, so its wall
seconds and peak RSS (VmHWM, reading and clustering) are its own. Both give the same clusters at the baseline's
size (asserted). The baseline runs at ``BASELINE_SIZE`` only (quadratic: 10x the hashes is 100x the time); the row
at 1M hashes compares with the baseline's rate at its size, which is the best that rate can be at 1M.

python -m benchmarks.bench_near_duplicates [--quick] writes benchmarks/results/near_duplicates.md as well.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.harness import Measurement, Row, compare

MAX_DISTANCE = 8
SIZES = (100_000, 1_000_000)
BASELINE_SIZE = 100_000
QUICK_SIZES = (20_000, 100_000)
QUICK_BASELINE_SIZE = 20_000
RESULTS = Path(__file__).resolve().parent / "results" / "near_duplicates.md"


def write_hashes(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, np.uint64)
    copies = n // 10
    flips = np.zeros(copies, np.uint64)
    for _ in range(6):  # 1-6 distinct-or-repeated bits: up to 6 bits apart
        use = rng.random(copies) < 0.8
        flips ^= np.where(use, np.uint64(1) << rng.integers(0, 64, copies).astype(np.uint64), np.uint64(0))
    flips[flips == 0] = 1
    values[n - copies :] = values[rng.integers(0, n - copies, copies)] ^ flips
    frame = pl.DataFrame({"value": values}).select(
        pl.format("{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(64)).alias("image_sha256"),
        pl.col("value").map_batches(lambda s: pl.Series([f"{v:016x}" for v in s.to_list()])).alias("phash"),
    )
    frame.write_parquet(path)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(path: Path, method: str, output: Path) -> dict:
    """(The subprocess side.) Cluster the hashes in ``path`` with ``method``; seconds, peak RSS, clusters."""
    started = time.perf_counter()
    if method == "ours":
        from mella_assets.lib.near_duplicates import cluster_images, parquet_sql

        clusters = cluster_images(parquet_sql([str(path)], "image_sha256, phash"), MAX_DISTANCE)
    else:
        from mella_assets.dataset.build import _UnionFind, near_duplicate_pairs

        frame = pl.read_parquet(path)
        shas, hashes = frame["image_sha256"].to_list(), frame["phash"].to_list()
        union = _UnionFind(shas)
        first: dict[str, str] = {}
        for sha, phash in zip(shas, hashes, strict=True):
            union.union(first.setdefault(phash, sha), sha)
        distinct = sorted(first)
        for i, j in near_duplicate_pairs(distinct, MAX_DISTANCE):
            union.union(first[distinct[i]], first[distinct[j]])
        clusters = pl.DataFrame({"image_sha256": shas, "cluster": [union.find(s) for s in shas]}).sort("image_sha256")
    seconds = time.perf_counter() - started
    clusters.write_parquet(output)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "clusters": clusters["cluster"].n_unique()}


def measure_in_subprocess(path: Path, method: str, output: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "benchmarks.bench_near_duplicates", "--worker", str(path), method, str(output)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"near-duplicate worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    sizes, baseline_size = (QUICK_SIZES, QUICK_BASELINE_SIZE) if quick else (SIZES, BASELINE_SIZE)
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="mella-near-dup-") as tmp:
        folder = Path(tmp)
        for n in sorted({baseline_size, *sizes}):
            write_hashes(folder / f"{n}.parquet", n)
            methods = ["ours", "baseline"] if n == baseline_size else ["ours"]
            for method in methods:
                results[method, n] = measure_in_subprocess(folder / f"{n}.parquet", method, folder / f"{method}{n}")
        same = pl.read_parquet(folder / f"ours{baseline_size}").equals(
            pl.read_parquet(folder / f"baseline{baseline_size}")
        )
        assert same, "the band join and the all-pairs clustering disagree"
    base = results["baseline", baseline_size]
    rows = []
    for n in sizes:
        ours = results["ours", n]
        rows.append(
            compare(
                f"near-duplicate clusters, {n:,} hashes (DuckDB band join over Parquet)",
                "hashes/s",
                Measurement(n, [n / ours["seconds"]]),
                Measurement(baseline_size, [baseline_size / base["seconds"]]),
                f"tiled numpy all pairs + union-find at {baseline_size:,} hashes",
                hashes=n,
                max_distance=MAX_DISTANCE,
                seconds=round(ours["seconds"], 1),
                peak_rss_mb=round(ours["peak_rss_mb"]),
                clusters=ours["clusters"],
                baseline_hashes=baseline_size,
                baseline_seconds=round(base["seconds"], 1),
                baseline_peak_rss_mb=round(base["peak_rss_mb"]),
                same_clusters_at_baseline_size=same,
            )
        )
    return [*rows, mark_duplicates_row(quick)]


def quadratic_marks(shas: list[str], phashes: list[str], max_bits: int) -> list[tuple[str | None, str | None]]:
    """``know.images.mark_duplicates`` as it was: every new image scanned against every kept one, in order."""
    seen, kept, out = set(), [], []
    for sha, phash in zip(shas, phashes, strict=True):
        if sha in seen:
            out.append(("duplicate_image", sha))
            continue
        value = int(phash, 16)
        match = next((other for bits, other in kept if (bits ^ value).bit_count() <= max_bits), None)
        if match is not None:
            out.append(("near_duplicate_image", match))
            continue
        seen.add(sha)
        kept.append((value, sha))
        out.append((None, None))
    return out


def mark_duplicates_row(quick: bool) -> Row:
    """The images stage's order-dependent marking (band index in memory) against the scan it replaced."""
    from mella_assets.know.images import DEFAULT_NEAR_DUPLICATE_BITS, mark_duplicates

    n = 3_000 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="mella-marks-") as tmp:
        write_hashes(Path(tmp) / "h.parquet", n, seed=1)
        frame = pl.read_parquet(Path(tmp) / "h.parquet")
    shas, phashes = frame["image_sha256"].to_list(), frame["phash"].to_list()
    bits = DEFAULT_NEAR_DUPLICATE_BITS
    assert mark_duplicates(shas, phashes, bits) == quadratic_marks(shas, phashes, bits)

    def timed(fn) -> Measurement:
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            fn(shas, phashes, bits)
            rates.append(n / (time.perf_counter() - started))
        return Measurement(n, rates)

    return compare(
        f"mark_duplicates, {n:,} images (band index)",
        "images/s",
        timed(mark_duplicates),
        timed(quadratic_marks),
        "scan of every kept image",
        images=n,
        max_bits=bits,
        same_marks=True,
    )


def write_report(rows: list[Row], quick: bool) -> None:
    lines = [
        "# Near-duplicate clusters: band join out of core vs all pairs in memory",
        "",
        f"One run per size in a fresh subprocess; threshold {MAX_DISTANCE} bits; {os.cpu_count()} CPUs"
        f"{' (quick)' if quick else ''}.",
        "",
        "The baseline's seconds at the larger size are extrapolated as quadratic: ×(hashes / its hashes)².",
        "",
        "| hashes | ours s | ours peak RSS MB | baseline hashes | baseline s | baseline s at this size | "
        "baseline peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row.notes
        if "hashes" not in n:
            lines += [
                "",
                f"{row.stage}: {row.ours:,.0f} vs {row.baseline:,.0f} {row.unit} ({row.ratio:.1f}x), "
                f"{row.baseline_name}, medians of {row.runs} runs, same marks.",
            ]
            continue
        lines.append(
            f"| {n['hashes']:,} | {n['seconds']} | {n['peak_rss_mb']} | {n['baseline_hashes']:,} | "
            f"{n['baseline_seconds']} | {n['baseline_seconds'] * (n['hashes'] / n['baseline_hashes']) ** 2:,.0f} | "
            f"{n['baseline_peak_rss_mb']} |"
        )
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("PARQUET", "METHOD", "OUTPUT"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), args.worker[1], Path(args.worker[2]))))
    else:
        result_rows = run(quick=args.quick)
        for row in result_rows:
            print(f"{row.stage}: {row.ours:,.0f} vs {row.baseline:,.0f} {row.unit} ({row.ratio:.2f}x) {row.notes}")
        write_report(result_rows, args.quick)
