"""Routing registered WARC pages by declared language (``route_by_declared_language``, raw_crawl's default) before
the alt-text filters, on a WARC pool every language registered (``sources/all.txt``): the demo corpus of the 8
languages at 4× (its hand-written pages with their noise; a site's pages in one language), all pages extracted
once, then each language's ``judge_candidates`` (the body of ``alt_text_pairs``).

Ours: the language's pages routed first. Baseline, same run: every page of the pool judged, as before routing
(the alt-text gate rejects the other languages' candidates as ``page_language_mismatch``). Rate = candidates of
the pool per second of judging, summed over the 8 languages; median of 3 after a warm-up (quick: 1, 1×). The kept
pairs of both are asserted equal (candidate index aside); the notes count rejects rows, language-ID texts and
routed pages.

python -m benchmarks.bench_routing [--quick]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.registration import route_by_declared_language
from mella_assets.demo.corpus import build_demo_corpus
from mella_assets.know.pairs import CANDIDATE_INDEX, judge_candidates
from mella_assets.languages import REGISTRY
from mella_assets.lib.langid import LanguageIdentifier

LANGUAGES = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")


class _Counting:
    """A language identifier that counts the texts it is asked about."""

    def __init__(self, identifier: LanguageIdentifier) -> None:
        self.texts = 0
        check_many = identifier.check_many

        def counted(texts, *args, **kwargs):
            self.texts += len(texts)
            return check_many(texts, *args, **kwargs)

        identifier.check_many = counted


def _pool(copies: int) -> pl.DataFrame:
    with tempfile.TemporaryDirectory() as folder:
        build_demo_corpus(Path(folder), "http://127.0.0.1:1", LANGUAGES, copies)
        files = sorted(Path(folder, "landing").rglob("*.warc.gz"))
        return pl.concat([extract_warc(path) for path in files], how="vertical_relaxed")


def _judge_every_language(pages: pl.DataFrame, routed: bool, identifiers: dict, counters: dict) -> dict:
    """Each language's judging of the pool (routed first or not): seconds, kept pairs, candidates and counts."""
    out = {"seconds": 0.0, "kept": {}, "candidates": 0, "rejects": 0, "language_id_texts": 0, "pages_routed": 0}
    for code in LANGUAGES:
        language, before = REGISTRY[code], counters[code].texts
        started = time.perf_counter()
        frame, left_out = route_by_declared_language(pages, language) if routed else (pages, 0)
        judged = judge_candidates(frame.with_columns(pl.lit(code).alias("language")), language, identifiers[code])
        out["seconds"] += time.perf_counter() - started
        out["kept"][code] = judged.kept.drop(CANDIDATE_INDEX)
        out["candidates"] += judged.candidates
        out["rejects"] += judged.rejects.height
        out["language_id_texts"] += counters[code].texts - before
        out["pages_routed"] += left_out
    return out


def run(quick: bool = False) -> list[Row]:
    pages = _pool(1 if quick else 4)
    identifiers = {code: LanguageIdentifier(targets=[REGISTRY[code]]) for code in LANGUAGES}
    counters = {code: _Counting(identifier) for code, identifier in identifiers.items()}
    for routed in (False, True):  # warm-up: detectors and tokenisers load on first use
        _judge_every_language(pages, routed, identifiers, counters)
    results: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(1 if quick else 3):
        for routed in (False, True):
            results[routed].append(_judge_every_language(pages, routed, identifiers, counters))
    for code in LANGUAGES:
        assert results[True][0]["kept"][code].equals(results[False][0]["kept"][code]), f"{code}: kept pairs changed"
    pool = results[False][0]["candidates"]

    def rate(routed: bool) -> Measurement:
        return Measurement(items=pool, rates=[pool / result["seconds"] for result in results[routed]])

    def counts(routed: bool) -> dict:
        first = results[routed][0]
        keys = ("candidates", "rejects", "language_id_texts", "pages_routed")
        return {f"{'routed' if routed else 'unrouted'}_{key}": first[key] for key in keys}

    return [
        compare(
            f"alt-text filters of 8 languages over one shared WARC pool ({pages.height} pages), routed first",
            "pool candidates/s",
            rate(True),
            rate(False),
            "every page judged for every language (alt-text gate only)",
            kept_pairs=sum(kept.height for kept in results[True][0]["kept"].values()),
            median_seconds=round(statistics.median(r["seconds"] for r in results[True]), 2),
            baseline_median_seconds=round(statistics.median(r["seconds"] for r in results[False]), 2),
            **counts(True),
            **counts(False),
        )
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.stage}: {row.ours:.1f} vs {row.baseline:.1f} {row.unit} ({row.ratio:.2f}x) {row.notes}")
