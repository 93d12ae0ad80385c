"""Peak RSS of one language × shard run at 1×, 4× and 8× crawl size (issue #18: memory per run bounded by the shard,
not the language), on generated miniature crawls (tests/support/mini_cc.py: 8 languages mixed in WARC files with a
columnar index, ~150 pages per language at 1×).

The shard count grows with the crawl (1, 4, 8 shards), so one shard holds about the same pages at every size: that
is how a deployment sizes shards (pages per shard fixed by the pods' memory), and what must stay flat is one shard
run's memory while the crawl grows. Each run is a fresh process running the shard's plain functions, as a
``raw_crawl`` + ``alt_text_pairs`` shard run does without Dagster: its selection rows (written by ``cc_selection``)
→ ``extract_selection`` (range reads from a folder) → ``judge_candidates``; ``ru_maxrss`` of the child. The
baseline is the same run at 1×; ratio = RSS at N× / RSS at 1× (1.0 = flat; the target is within 1.2).

A second pair of rows measures the registered-WARC route at the same sizes: a shard of WARC files routed by page
reads the language's whole extraction (cached per WARC) and keeps its own pages, so its memory grows with the
language (the cost of routing by page instead of by file, noted in docs/architecture.md).

Medians of 3 runs (quick: 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.crawl.cc_index import select_pages

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")
TARGET = "cs"
SCALES = (1, 4, 8)

CHILD = r"""
import json, resource, sys
import polars as pl
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.range_reads import extract_selection
from mella_assets.crawl.registration import Extraction, shard_pages
from mella_assets.know.pairs import judge_candidates
from mella_assets.languages import LANGUAGES
from mella_assets.lib.langid import LanguageIdentifier

mode, selection_file, root, shards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
language = LANGUAGES["cs"]
identifier = LanguageIdentifier(targets=[language])
if mode == "index":
    pages = extract_selection(pl.read_parquet(selection_file), root, rate=1000.0).pages
else:  # every WARC of the language extracted (what the per-WARC cache holds), the shard's pages kept
    warcs = json.loads(selection_file)
    frames = [extract_warc(f"{root}/{name}").with_columns(pl.lit(name).alias("warc_uri")) for name in warcs]
    done = Extraction(frames=frames)
    pages, _ = shard_pages(done, 0, shards)
judged = judge_candidates(pages.with_columns(pl.lit("cs").alias("language")), language, identifier)
print(json.dumps({"pages": pages.height, "kept": judged.kept.height,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(mode: str, argument: str, root: Path, shards: int) -> dict:
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", CHILD, mode, argument, str(root), str(shards)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    sys.path.insert(0, str(REPO / "tests"))  # the miniature crawl lives with the tests that use it
    from support.mini_cc import build_mini_crawl

    runs = 1 if quick else 3
    base_pages = 60 if quick else 150
    measured: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for scale in SCALES:
            root = Path(folder) / f"x{scale}"
            crawl = build_mini_crawl(
                root, languages=LANGUAGES, pages_per_language=base_pages * scale, warc_files=4 * scale
            )
            selection = select_pages(root, [TARGET], crawl=crawl.crawl, shards=scale)
            shard_file = root / "shard-0.parquet"
            selection.filter(pl.col("shard") == 0).write_parquet(shard_file)
            for _ in range(runs):
                measured.setdefault(("index", scale), []).append(_child("index", str(shard_file), root, scale))
                warcs = json.dumps(list(crawl.warc_files))
                measured.setdefault(("warc", scale), []).append(_child("warc", warcs, root, scale))

    def rss(mode: str, scale: int) -> Measurement:
        return Measurement(items=0, rates=[run["rss_mib"] for run in measured[(mode, scale)]])

    rows = []
    for mode, name in (("index", "index route (selection + range reads)"), ("warc", "registered-WARC route")):
        for scale in SCALES[1:]:
            pages = measured[(mode, scale)][0]["pages"]
            rows.append(
                compare(
                    f"shard run peak RSS, {name}, {scale}x crawl ({scale} shards)",
                    "MiB",
                    rss(mode, scale),
                    rss(mode, 1),
                    "same at 1x crawl (1 shard)",
                    shard_pages=pages,
                    shard_pages_at_1x=measured[(mode, 1)][0]["pages"],
                )
            )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.stage}: {row.ours:.1f} vs {row.baseline:.1f} {row.unit} ({row.ratio:.2f}x) {row.notes}")
