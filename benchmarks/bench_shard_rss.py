"""Peak RSS of one language × shard run at 1×, 4× and 8× crawl size (issue #18: memory per run bounded by the shard,
not the language), on generated miniature crawls (tests/support/mini_cc.py: 8 languages mixed in WARC files with a
columnar index, ~150 pages per language at 1×).

The shard count grows with the crawl (1, 4, 8 shards), so one shard holds about the same pages at every size: that
is how a deployment sizes shards (pages per shard fixed by the pods' memory), and what must stay flat is one shard
run's memory while the crawl grows. Each run is a fresh process running the shard's plain functions, as a
``raw_crawl`` + ``alt_text_pairs`` shard run does without Dagster: its selection rows (written by ``cc_selection``)
→ ``extract_selection`` (range reads from a folder) → ``judge_candidates``; ``ru_maxrss`` of the child. The
baseline is the same run at 1×; ratio = RSS at N× / RSS at 1× (1.0 = flat; the target is within 1.2).

Two more pairs of rows measure the registered-WARC route at the same sizes, as ``raw_crawl`` runs it: each WARC
extracted once and cached in per-shard slices (``extract_sources``), the shard run reading only its own slice of
each file, then leaving out pages that declare another language (``route_by_declared_language``); against the
same run at 1×, and against the route before the slices at the same size (every WARC's whole extraction in
memory, the shard's pages kept, no routing). ``held_pages`` / ``held_mib`` note what the run held before judging.

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
from mella_assets.crawl.registration import extract_sources, register_sources
from mella_assets.languages import LANGUAGES as REGISTRY_LANGUAGES
from mella_assets.lib.lake import LakeStore
from mella_assets.tables import CRAWL_SOURCES

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")
TARGET = "cs"
SCALES = (1, 4, 8)

CHILD = r"""
import json, resource, sys
import polars as pl
from mella_assets.crawl.cc_index import page_shards
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.range_reads import extract_selection
from mella_assets.crawl.registration import extract_sources, route_by_declared_language
from mella_assets.know.pairs import judge_candidates
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.langid import LanguageIdentifier

mode, argument, root, shards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
language = LANGUAGES["cs"]
identifier = LanguageIdentifier(targets=[language])
if mode == "index":
    pages = held = extract_selection(pl.read_parquet(argument), root, rate=1000.0).pages
elif mode == "warc":  # the shard's cached slice of each registered WARC, pages declaring another language left out
    held = extract_sources(pl.read_parquet(f"{argument}/sources.parquet"), LakeStore(argument), shard=0,
                           shards=shards).pages()
    pages, _ = route_by_declared_language(held, language)
else:  # before the slices: every WARC of the language extracted whole, the shard's pages kept
    frames = [extract_warc(f"{root}/{name}").with_columns(pl.lit(name).alias("warc_uri"))
              for name in json.loads(argument)]
    held = pl.concat(frames, how="vertical_relaxed")
    pages = held.filter(page_shards(held["domain"], shards) == 0)
judged = judge_candidates(pages.with_columns(pl.lit("cs").alias("language")), language, identifier)
print(json.dumps({"pages": pages.height, "kept": judged.kept.height, "held_pages": held.height,
                  "held_mib": held.estimated_size() / 2**20,
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
            lake = _lake_with_slices(root, crawl.warc_files, scale)
            for _ in range(runs):
                measured.setdefault(("index", scale), []).append(_child("index", str(shard_file), root, scale))
                measured.setdefault(("warc", scale), []).append(_child("warc", str(lake), root, scale))
                warcs = json.dumps(list(crawl.warc_files))
                measured.setdefault(("whole", scale), []).append(_child("whole", warcs, root, scale))

    def rss(mode: str, scale: int) -> Measurement:
        return Measurement(items=0, rates=[run["rss_mib"] for run in measured[(mode, scale)]])

    def held(mode: str, scale: int) -> dict:
        first = measured[(mode, scale)][0]
        return {"held_pages": first["held_pages"], "held_mib": round(first["held_mib"], 2)}

    rows = []
    routes = (("index", "index route (selection + range reads)"), ("warc", "registered WARCs, per-shard slices"))
    for mode, name in routes:
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
                    **held(mode, scale),
                )
            )
    for scale in SCALES[1:]:
        rows.append(
            compare(
                f"shard run peak RSS, registered WARCs, slices vs whole extractions, {scale}x crawl",
                "MiB",
                rss("warc", scale),
                rss("whole", scale),
                "every WARC's whole extraction, shard kept, no routing (before the slices)",
                **held("warc", scale),
                whole_held_pages=held("whole", scale)["held_pages"],
                whole_held_mib=held("whole", scale)["held_mib"],
            )
        )
    return rows


def _lake_with_slices(root: Path, warc_files: list[str], shards: int) -> Path:
    """A lake where the language registered the crawl's WARC files (local paths) and ``raw_crawl`` cached their
    per-shard slices, with the registration in ``sources.parquet``: what a shard run finds."""
    lake = root / "lake"
    store = LakeStore(lake)
    store.put_bytes("sources/cs.txt", "\n".join(str(root / name) for name in warc_files).encode())
    sources, _, _ = register_sources(REGISTRY_LANGUAGES[TARGET], store, CRAWL_SOURCES.empty(), lambda: None)
    extract_sources(sources, store, shard=0, shards=shards)
    sources.write_parquet(lake / "sources.parquet")
    return lake


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.stage}: {row.ours:.1f} vs {row.baseline:.1f} {row.unit} ({row.ratio:.2f}x) {row.notes}")
