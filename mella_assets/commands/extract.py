"""`mella extract WARC... --output OUT.parquet`: one row per image candidate, with the pipeline's own
extraction code (``lib/warc.py`` + ``lib/html.py``)."""

from __future__ import annotations

import argparse
import sys

import polars as pl

from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.warc import WarcStats

COLUMNS = [
    "page_url",
    "src_url",
    "image_url",
    "alt",
    "page_lang",
    "og_locale",
    "title_attr",
    "width_attr",
    "height_attr",
    "source_attr",
    "context_text",
    "context_source",
    "charset",
    "opt_out",
    "warc_uri",
    "record_offset",
]


def candidates(paths: list[str], stats: WarcStats, nearby_context: bool = False) -> pl.DataFrame:
    """The image candidates of the pages in ``paths`` (columns :data:`COLUMNS`); ``nearby_context``: as in
    :func:`mella_assets.crawl.html.extract_warc`."""
    frames = [extract_warc(path, stats, nearby_context=nearby_context) for path in paths]
    pages = pl.concat(frames, how="vertical_relaxed")
    return (
        pages.explode("images", empty_as_null=False, keep_nulls=False)
        .unnest("images")
        .rename({"alt_raw": "alt", "html_lang": "page_lang"})
        .select(COLUMNS)
    )


def run(args: argparse.Namespace) -> int:
    stats = WarcStats()
    frame = candidates(args.warc, stats, nearby_context=args.nearby_context)
    frame.write_parquet(args.output)
    print(
        f"{frame.height} candidates from {stats.html_pages} pages ({stats.malformed} malformed, "
        f"{stats.skipped_non_html} non-HTML, {stats.skipped_status} non-200 skipped) -> {args.output}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="image candidates of WARC files into a Parquet file")
    parser.add_argument("warc", nargs="+", help="WARC or WARC.gz files")
    parser.add_argument("--output", "-o", required=True, help="Parquet file to write")
    parser.add_argument(
        "--nearby-context",
        action="store_true",
        help="also take bounded nearby text (<= 200 chars) as context when an image has no <figcaption> "
        "(context_source 'nearby'); costs ~30%% of extraction speed",
    )
    parser.set_defaults(func=run)
