"""Common Crawl by index and range (crawl/cc_index.py + crawl/range_reads.py) against whole WARC files, on a generated
miniature crawl (tests/support/mini_cc.py): 8 languages x 200 pages mixed in 8 WARC files, every record its own gzip
member, with request and metadata records between the responses as in Common Crawl.

Two rows:

- bytes read for one language's pages (Czech, 1/8 of the crawl's pages): range reads over a loopback HTTP server
  (the server's own count of body bytes sent) against the size of the WARC files holding them;
- that language's pages per second of this process's CPU time: index selection + range extraction (DuckDB over
  the index, HTTP range requests to a loopback server in another process, the extractor on the records read), and
  the same from a folder (file seeks, no HTTP), against extracting the whole WARC files and keeping the language's
  URLs. Pages are small (~2 KB of HTML, a few images each), so per-request costs weigh more than on real pages.

Medians of 5 runs (quick: 3) after one warm-up; CPU time of this process (time.process_time), so other processes on
a shared machine do not count against either side.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.crawl.cc_index import select_pages
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.range_reads import extract_selection

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")
TARGET = "cs"


def _cpu_rate(fn, runs: int) -> Measurement:
    fn()
    rates, items = [], 0
    for _ in range(runs):
        started = time.process_time()
        items = fn()
        rates.append(items / max(time.process_time() - started, 1e-9))
    return Measurement(items=items, rates=rates)


def run(quick: bool = False) -> list[Row]:
    sys.path.insert(0, str(REPO / "tests"))  # the miniature crawl lives with the tests that use it
    from support.mini_cc import RangeServer, build_mini_crawl

    pages = 100 if quick else 200
    runs = 3 if quick else 5
    with tempfile.TemporaryDirectory() as folder:
        crawl = build_mini_crawl(Path(folder), languages=LANGUAGES, pages_per_language=pages, warc_files=8)
        warcs = [crawl.warc_path(name) for name in crawl.warc_files]
        whole_bytes = sum(path.stat().st_size for path in warcs)
        with RangeServer(crawl.root) as server:
            selection = select_pages(server.url, [TARGET], crawl=crawl.crawl)
            before = len(server.warc_gets())
            result = extract_selection(selection, server.url, rate=10_000.0)
            gets = server.warc_gets()[before:]
            range_bytes = sum(get.bytes_sent for get in gets)
            selected_bytes = int(selection["warc_record_length"].sum())

            def by_range(base: str) -> int:
                chosen = select_pages(base, [TARGET], crawl=crawl.crawl)
                return extract_selection(chosen, base, rate=10_000.0).pages.height

            def whole() -> int:
                frame = pl.concat([extract_warc(path) for path in warcs])
                return frame.filter(pl.col("page_url").is_in(selection["url"].to_list())).height

            assert by_range(server.url) == whole() == result.pages.height, "both paths must give the same pages"
            # The rates with the server in another process: only the client's CPU counts, as against a real one.
            server_process = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "support" / "mini_cc.py"), str(crawl.root)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])},
            )
            try:
                url = server_process.stdout.readline().strip()
                ranged = _cpu_rate(lambda: by_range(url), runs)
                folder_rate = _cpu_rate(lambda: by_range(str(crawl.root)), runs)
                baseline = _cpu_rate(whole, runs)
            finally:
                server_process.terminate()
                server_process.wait(timeout=10)
    same = Measurement(items=1, rates=[range_bytes / 1e6])
    files = Measurement(items=1, rates=[whole_bytes / 1e6])
    return [
        compare(
            f"cc range reads: MB read for one language's pages ({TARGET}, 1/{len(LANGUAGES)} of the crawl)",
            "MB",
            same,
            files,
            "the whole WARC files holding them",
            requests=len(gets),
            records=selection.height,
            selected_mb=round(selected_bytes / 1e6, 3),
            read_over_selected=round(range_bytes / selected_bytes, 3),
        ),
        compare(
            "cc selection + range extraction: one language's pages per CPU second",
            "pages/s/core",
            ranged,
            baseline,
            "whole-WARC extraction filtered to the language's URLs",
            pages=result.pages.height,
            crawl_pages=len(crawl.captures),
        ),
        compare(
            "cc selection + range extraction from a folder (file seeks): one language's pages per CPU second",
            "pages/s/core",
            folder_rate,
            baseline,
            "whole-WARC extraction filtered to the language's URLs",
            pages=result.pages.height,
        ),
    ]
