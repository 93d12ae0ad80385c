"""`mella langid`: one line per stdin line, ``<code or und>\\t<confidence>``, with the pipeline's detector and
rules (script priors, all-languages lingua, per-language labels such as hr/bs for Latin Serbian)."""

from __future__ import annotations

import argparse
import os
import sys

from mella_assets.languages import LANGUAGES, REGISTRY
from mella_assets.lib.langid import BACKENDS, LanguageIdentifier, identify_many

BATCH = 2048


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--languages", help="comma-separated target codes (default: the configured languages)")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=os.environ.get("MELLA_LANGID_BACKEND", "lingua"), help="detector"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.languages:
        unknown = [c for c in args.languages.split(",") if c.strip() not in REGISTRY]
        if unknown:
            print(f"error: unknown language codes {unknown}; known: {sorted(REGISTRY)}", file=sys.stderr)
            return 2
        targets = [REGISTRY[c.strip()] for c in args.languages.split(",")]
    else:
        targets = list(LANGUAGES.values())
    identifier = LanguageIdentifier(args.backend, targets)
    stdin = sys.stdin.buffer
    batch: list[str] = []

    def flush() -> None:
        for detection in identify_many(identifier, batch):
            sys.stdout.write(f"{detection.label}\t{detection.confidence:.4f}\n")
        batch.clear()

    for raw in stdin:
        batch.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        if len(batch) >= BATCH:
            flush()
    flush()
    sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = build_parser(subparsers.add_parser("langid", help="language of each stdin line: <code|und>\\t<conf>"))
    parser.set_defaults(func=run)
