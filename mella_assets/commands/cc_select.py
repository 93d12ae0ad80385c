"""Common Crawl on the command line.

- `mella cc-select --index PATH_OR_URI [--crawl NAME] --languages ar,cs,… --output SELECTION.parquet [--shards N]`:
  the pages of a crawl in the given languages, from Common Crawl's columnar index (``crawl/cc_index.py``);
  ``--register`` also adds the crawl to the Dagster instance's ``crawls`` partitions (the pipeline's
  ``cc_selection``);
- `mella extract --selection SELECTION.parquet --warc-base BASE --output OUT.parquet`: the image candidates of
  exactly those pages, their records read by range (``crawl/range_reads.py``), in the columns of
  `mella extract WARC…` (the arguments and the run below; ``commands/extract.py`` hands over to them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register_crawl(crawl: str, dagster_home: str) -> None:
    """Add ``crawl`` to the ``crawls`` partitions of the Dagster instance in ``dagster_home`` (what the UI's "Add
    partition" does): the pipeline's ``cc_selection`` can then select it and every ``raw_crawl`` shard reads it."""
    import dagster as dg

    from mella_assets.partitions import CRAWL_PARTITIONS

    Path(dagster_home).mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.from_config(str(Path(dagster_home).resolve())) as instance:
        instance.add_dynamic_partitions(CRAWL_PARTITIONS.name, [crawl])


def run(args: argparse.Namespace) -> int:
    from mella_assets.crawl.cc_index import select_pages

    if not args.output and not args.register:
        print("error: give --output (a selection file), --register (a crawl partition), or both", file=sys.stderr)
        return 2
    if args.register and not args.crawl:
        print("error: --register needs --crawl", file=sys.stderr)
        return 2
    if "://" not in args.index and not Path(args.index).exists():
        print(f"error: no such index folder or file: {args.index}", file=sys.stderr)
        return 1
    try:
        selection = select_pages(args.index, args.languages, crawl=args.crawl, shards=args.shards)
    except ValueError as error:  # an unknown language, an index URL without --crawl: the command line's
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # a missing index or listing: a failure while running
        print(f"error: {error}", file=sys.stderr)
        return 1
    counts = selection.group_by("language").len().sort("language")
    summary = ", ".join(f"{row['language']} {row['len']}" for row in counts.iter_rows(named=True)) or "none"
    if args.output:
        selection.write_parquet(args.output)
        print(
            f"{selection.height} pages selected ({summary}) in {args.shards} shard(s) -> {args.output}", file=sys.stderr
        )
    if args.register:
        register_crawl(args.crawl, args.dagster_home)
        print(
            f"crawl {args.crawl} registered ({selection.height} pages: {summary}) in {args.dagster_home}: materialize "
            "cc_selection for it, then the languages' shard runs",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cc-select", help="select a crawl's pages in some languages from Common Crawl's columnar index"
    )
    parser.add_argument(
        "--index",
        required=True,
        help="folder, s3:// or https:// root of Common Crawl's layout (e.g. https://data.commoncrawl.org/), a "
        "cc-index-table.paths.gz listing, or Parquet file(s)",
    )
    parser.add_argument("--crawl", help="crawl name, e.g. CC-MAIN-2024-42 (required for an https:// root)")
    parser.add_argument("--languages", required=True, help="comma-separated registry codes, e.g. ar,cs,sr")
    parser.add_argument("--output", "-o", help="selection Parquet file to write")
    parser.add_argument("--shards", type=int, default=1, help="shards by registered domain (default 1)")
    parser.add_argument(
        "--register",
        action="store_true",
        help="add --crawl to the Dagster instance's `crawls` partitions, for the pipeline's cc_selection",
    )
    parser.add_argument(
        "--dagster-home",
        default=os.environ.get("DAGSTER_HOME", ".mella/dagster_home"),
        help="Dagster instance folder for --register (default: $DAGSTER_HOME or .mella/dagster_home)",
    )
    parser.set_defaults(func=run)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """`mella extract`'s arguments for reading a selection by range instead of whole WARC files."""
    parser.add_argument("--selection", help="selection Parquet file of `mella cc-select` (instead of WARC files)")
    parser.add_argument(
        "--warc-base",
        help="where the selection's warc_filename paths live: https://data.commoncrawl.org/, s3://commoncrawl/, a "
        "folder or any URL",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="range requests at a time (default 8)")
    parser.add_argument("--rate", type=float, default=None, help="range requests per second in all (default 20)")


def run_selection(args: argparse.Namespace, columns: list[str]) -> int:
    """`mella extract --selection …`: candidates of the selected records (one row per image, each record once), in
    ``columns`` (`mella extract`'s)."""
    import polars as pl

    from mella_assets.crawl import range_reads

    if not args.selection or not args.warc_base or args.warc or getattr(args, "filter", False):
        print("error: give WARC files, or --selection with --warc-base (no WARC files, no --filter)", file=sys.stderr)
        return 2
    selection = pl.read_parquet(args.selection)
    options = {
        name: value for name, value in (("concurrency", args.concurrency), ("rate", args.rate)) if value is not None
    }
    try:
        result = range_reads.extract_selection(selection, args.warc_base, nearby_context=args.nearby_context, **options)
    except ValueError as error:  # an unsupported base, a bad record span
        print(f"error: {error}", file=sys.stderr)
        return 2
    frame = (
        result.pages.explode("images", empty_as_null=False, keep_nulls=False)
        .unnest("images")
        .rename({"alt_raw": "alt", "html_lang": "page_lang"})
        .select(columns)
    )
    frame.write_parquet(args.output)
    read, stats = result.read, result.warc
    print(
        f"{frame.height} candidates from {stats.html_pages} pages; {read.records_read} records read in "
        f"{read.requests} requests ({read.bytes_read:,} bytes, {read.retries} retries), {read.records_failed} "
        f"failed -> {args.output}",
        file=sys.stderr,
    )
    for row in result.failures.group_by("reason").len().sort("reason").iter_rows():
        print(f"  failed: {row[0]} x {row[1]}", file=sys.stderr)
    return 0
