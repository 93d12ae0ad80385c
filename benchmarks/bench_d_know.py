"""Peak RSS and wall time of one language's ``d_know`` at 1×, 4× and 8× the language (issue #18: language-level
merges in DuckDB over the shard files, memory bounded by a batch, not the language).

Ours: ``know/d_know_build.build_d_know`` at its defaults (DuckDB reads the shard Parquet files, joins and dedups
under ``MELLA_DKNOW_MEMORY_MB``, 256 MiB, spilling beyond it; the order sorted by page-URL ranges of 100k rows;
keywords per batch of 20k rows; a streaming Parquet writer). Baseline, same run: the in-memory
polars recipe it replaced (tests/support/d_know_reference.py: every shard file of both tables read whole, then
sorted, joined, deduplicated, written as one frame); both give the same table (asserted on the first run's output).

A generated language of 8 shards: pages of ~5 image candidates on 400 sites (a site's pages in one shard), every
``alt_text_pairs`` column filled (context text ~300 characters, as extraction stores it), image URLs on pages of
several shards, 5 % of images not stored, some (image, alt) pairs repeated, a quarter headlines and the cap at 0.2.
Each measure is a fresh child process (peak RSS as ``VmHWM``, wall of the build and write); median of 3 (quick: 1,
smaller).

python -m benchmarks.bench_d_know [--quick] writes benchmarks/results/d_know.md as well.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.lib.lake import LakeStore
from mella_assets.tables import ALT_TEXT_PAIRS, IMAGES

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "d_know.md"
SHARDS = [f"{index:02d}" for index in range(8)]
BASE_PAIRS = 50_000
SCALES = (1, 4, 8)
MAX_HEADLINE_SHARE = 0.2

CHILD = r"""
import json, sys, time
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore

mode, root, shards, share = sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
store, language = LakeStore(root), LANGUAGES["cs"]
started = time.perf_counter()
if mode == "duckdb":
    from mella_assets.know.d_know_build import build_d_know

    from mella_assets.resources.lake import Lake
    from mella_assets.tables import D_KNOW

    lake = Lake(root=root)  # the asset's streaming write
    rows = build_d_know(store, language, shards, share, lambda b: lake.write_batches(D_KNOW, language, b)).rows
else:
    from support.d_know_reference import reference_d_know

    pairs = store.read_shards("alt_text_pairs", "cs", shards)
    images = store.read_shards("images", "cs", shards)
    frame, _ = reference_d_know(pairs, images, language, share)
    store.write_table("d_know", "cs", frame)
    rows = frame.height
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked copy of the parent (which held the
# generated language), VmHWM is this program's own peak.
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "rss_mib": peak_kib / 1024}))
"""


def _syllables(rng: random.Random, count: int) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvzčřšž", "aeiouyáéíůý"
    return [
        "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4))) for _ in range(count)
    ]


def write_language(root: Path, pairs: int, seed: int = 0) -> None:
    """A generated Czech language of about ``pairs`` kept alt texts over :data:`SHARDS`, as the shard runs write it."""
    rng = random.Random(seed)
    words = _syllables(rng, 2_000)
    alts = [" ".join(rng.choices(words, k=rng.randint(4, 9))) for _ in range(int(pairs * 0.9))]
    store = LakeStore(root)
    rows: dict[str, list[dict]] = {shard: [] for shard in SHARDS}
    image_pool = int(pairs * 0.7)
    page = 0
    while sum(len(r) for r in rows.values()) < pairs:
        site = rng.randrange(400)
        shard = SHARDS[site % len(SHARDS)]
        page_url = f"https://www.web{site}.cz/clanek/{page}"
        page += 1
        context = " ".join(rng.choices(words, k=45))
        for _ in range(rng.randint(1, 9)):
            alt = rng.choice(alts)
            rows[shard].append(
                {
                    "page_url": page_url,
                    "domain": f"www.web{site}.cz",
                    "title": f"Článek {page}",
                    "warc_uri": f"s3://commoncrawl/crawl-data/CC-MAIN-2024-42/{shard}.warc.gz",
                    "record_offset": page * 4096,
                    "image_url": f"https://img{site % 50}.cz/{rng.randrange(image_pool)}.jpg",
                    "alt_raw": alt,
                    "alt_text": alt,
                    "context_text": context,
                    "alt_kind": rng.choices(("caption", "headline", "description"), weights=(3, 3, 6))[0],
                    "language": "cs",
                }
            )
    for shard, shard_rows in rows.items():
        frame = pl.DataFrame(shard_rows)
        missing = [c for c in ALT_TEXT_PAIRS.columns if c not in frame.columns]
        frame = frame.with_columns(pl.lit(None, dtype=ALT_TEXT_PAIRS.columns[c]).alias(c) for c in missing)
        store.write_table("alt_text_pairs", "cs", ALT_TEXT_PAIRS.conform(frame), shard)
        urls = frame["image_url"].unique(maintain_order=True).to_list()
        stored = [url for url in urls if rng.random() > 0.05]
        # One image under several URLs: the sha256 depends on the file name, not the host.
        sha = [hashlib.sha256(url.rsplit("/", 1)[1].encode()).hexdigest() for url in stored]
        images = pl.DataFrame(
            {
                "language": "cs",
                "image_url": stored,
                "image_sha256": sha,
                "phash": [f"{rng.getrandbits(64):016x}" for _ in stored],
                "image_key": [f"images/{s[:2]}/{s}.jpg" for s in sha],
                "width": 800,
                "height": 600,
                "format": "JPEG",
                "bytes": 120_000,
                "http_status": 200,
                "final_url": stored,
                "fetched_sha256": sha,
            }
        )
        images = images.with_columns(
            pl.col(c).cast(IMAGES.columns[c]) if c in images.columns else pl.lit(None, IMAGES.columns[c]).alias(c)
            for c in IMAGES.columns
        )
        store.write_table("images", "cs", IMAGES.conform(images), shard)


def _child(mode: str, root: Path) -> dict:
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", CHILD, mode, str(root), ",".join(SHARDS), str(MAX_HEADLINE_SHARE)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    runs = 1 if quick else 3
    base = 5_000 if quick else BASE_PAIRS
    measured: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for scale in SCALES:
            root = Path(folder) / f"x{scale}"
            write_language(root, base * scale, seed=scale)
            for attempt in range(runs):
                for mode in ("duckdb", "polars"):
                    measured.setdefault((mode, scale), []).append(_child(mode, root))
                    if attempt == 0:
                        (root / f"d_know.{mode}.parquet").write_bytes(
                            (root / "tables" / "d_know" / "language=cs" / "data.parquet").read_bytes()
                        )
            same = pl.read_parquet(root / "d_know.duckdb.parquet").equals(
                pl.read_parquet(root / "d_know.polars.parquet")
            )
            assert same, f"the two routes wrote different tables at {scale}x"
            measured[("pairs", scale)] = [{"pairs": LakeStore(root).read_shards("alt_text_pairs", "cs", SHARDS).height}]
    rows = []
    for scale in SCALES:
        for measure, unit in (("rss_mib", "MiB"), ("seconds", "s")):
            ours = Measurement(items=0, rates=[run[measure] for run in measured[("duckdb", scale)]])
            baseline = Measurement(items=0, rates=[run[measure] for run in measured[("polars", scale)]])
            rows.append(
                compare(
                    f"d_know {'peak RSS' if measure == 'rss_mib' else 'wall'}, {scale}x language",
                    unit,
                    ours,
                    baseline,
                    "in-memory polars recipe, same run",
                    pairs=measured[("pairs", scale)][0]["pairs"],
                    d_know_rows=measured[("duckdb", scale)][0]["rows"],
                )
            )
    _write_results(rows, runs, quick)
    return rows


def _write_results(rows: list[Row], runs: int, quick: bool) -> None:
    by_scale = {}
    for row in rows:
        scale = int(row.stage.split(", ")[1].split("x")[0])
        by_scale.setdefault(scale, {})["rss" if row.unit == "MiB" else "wall"] = row
    first = by_scale[SCALES[0]]
    lines = [
        "# D_know of one language: DuckDB over the shard files vs the in-memory polars recipe (bench_d_know.py)",
        "",
        f"Generated Czech language, {len(SHARDS)} shards, cap {MAX_HEADLINE_SHARE}; each figure the median of {runs} "
        "fresh child processes (peak RSS: `VmHWM`; wall of read, merge, keywords and write); both routes write the "
        "same table (asserted). DuckDB route at its defaults: `MELLA_DKNOW_MEMORY_MB` 256, page-URL ranges of "
        f"100,000 rows, batches of 20,000.{' Quick run (smaller inputs).' if quick else ''}",
        "",
        "| language | kept alt texts | d_know rows | DuckDB RSS | polars RSS | DuckDB RSS / 1× | polars RSS / 1× "
        "| DuckDB wall | polars wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scale, pair in by_scale.items():
        rss, wall = pair["rss"], pair["wall"]
        lines.append(
            f"| {scale}× | {rss.notes['pairs']:,} | {rss.notes['d_know_rows']:,} | {rss.ours:,.1f} MiB "
            f"| {rss.baseline:,.1f} MiB | {rss.ours / first['rss'].ours:.2f}× "
            f"| {rss.baseline / first['rss'].baseline:.2f}× | {wall.ours:,.1f} s | {wall.baseline:,.1f} s |"
        )
    ranges = "; ".join(
        f"{scale}×: DuckDB {pair['rss'].ours_range[0]:,.0f}–{pair['rss'].ours_range[1]:,.0f} MiB, "
        f"polars {pair['rss'].baseline_range[0]:,.0f}–{pair['rss'].baseline_range[1]:,.0f} MiB"
        for scale, pair in by_scale.items()
    )
    lines += ["", f"RSS ranges: {ranges}.", ""]
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.stage}: {row.ours:.1f} vs {row.baseline:.1f} {row.unit} ({row.ratio:.2f}x) {row.notes}")
    print(f"wrote {RESULTS}")
