"""`mella crawl`: politely crawl seed URLs of one language into a WARC file in ``landing/<code>/``.

The lake may be a folder or ``s3://bucket/prefix``: the crawler writes into a temporary folder beside the lake's
local files (the lake folder, or the S3 lake's cache) and the finished file is put into the lake (renamed into
place, or uploaded as one object, complete or absent) under the same ``crawl-<time>-<id>.warc.gz`` name.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mella_assets.crawl.crawler import crawl, html_fetcher
from mella_assets.lib.http import DEFAULT_USER_AGENT, HttpFetcher
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.progress import terminal_bar
from mella_assets.settings import load_settings


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--language", required=True, help="language code; the WARC lands in landing/<code>/")
    parser.add_argument("--seed", action="append", required=True, help="seed URL (repeat for several)")
    parser.add_argument("--lake", default=load_settings().lake, help="lake folder or s3:// URL (default: $MELLA_LAKE)")
    parser.add_argument("--max-pages", type=int, default=100, help="pages stored at most (default 100)")
    parser.add_argument("--max-depth", type=int, default=2, help="link depth from the seeds (default 2)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds between requests to one host")
    parser.add_argument("--per-host", type=int, default=2, help="requests in flight per host")
    parser.add_argument("--user-agent", default=DEFAULT_USER_AGENT, help="User-Agent header")
    parser.add_argument(
        "--allow-network", action="append", default=[], help="private network to allow (CIDR), e.g. 127.0.0.1/32"
    )
    return parser


class _CountingFetcher:
    """The crawler's fetcher, advancing the terminal's progress bar by every answer (page or skip) it hands over."""

    def __init__(self, fetcher: HttpFetcher, bar: Any) -> None:
        self._fetcher, self._bar = fetcher, bar

    def fetch_many(self, urls: list[str], **kwargs: Any) -> Iterator[Any]:
        for fetched in self._fetcher.fetch_many(urls, **kwargs):
            self._bar.update(1)
            yield fetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fetcher, name)


def run(args: argparse.Namespace) -> int:
    store = LakeStore(args.lake)
    fetcher = html_fetcher(
        delay_s=args.delay,
        max_per_host=args.per_host,
        allowed_networks=args.allow_network,
        user_agent=args.user_agent,
    )
    landing = f"landing/{args.language}"
    # Beside the lake's local files (on one file system with them), so the finished file moves in without a copy.
    store.local_root.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".tmp-crawl-", dir=store.local_root) as scratch,
        terminal_bar(args.max_pages, "pages fetched", "page") as bar,
    ):
        counted = _CountingFetcher(fetcher, bar)
        result = crawl(args.seed, Path(scratch), counted, max_pages=args.max_pages, max_depth=args.max_depth)
        where = None
        if result.warc_path is not None:
            key = f"{landing}/{result.warc_path.name}"
            store.put_file(key, result.warc_path, move=True)
            where = store.location(key)
    for url, reason, status in result.rejects:
        print(f"skipped\t{reason}\t{status or ''}\t{url}", file=sys.stderr)
    print(f"{len(result.pages)} pages -> {where or '(no file: nothing stored)'}")
    if where is None:  # a crawl that stored nothing failed, whatever the reasons listed above
        print("error: no page was stored (see the skipped lines above)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(argparse.ArgumentParser(prog="mella crawl")).parse_args(argv))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = build_parser(subparsers.add_parser("crawl", help="politely crawl seed URLs into landing/<code>/"))
    parser.set_defaults(func=run)
