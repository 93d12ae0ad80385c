"""`mella langid`: one line per stdin line, ``<code or und>\\t<confidence>``, with the pipeline's detector and
rules (script rules, CLD2 for clear texts, lingua for the rest, Serbian / Croatian / Bosnian words for Latin
Serbian)."""

from __future__ import annotations

import argparse
import sys

from mella_assets.languages import LANGUAGES, REGISTRY
from mella_assets.lib.langid import BACKENDS, LanguageIdentifier, identify_many
from mella_assets.lib.page_language import page_language
from mella_assets.settings import load_settings

BATCH = 2048


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--languages", help="comma-separated target codes (default: the configured languages)")
    parser.add_argument("--backend", choices=BACKENDS, default=load_settings().langid_backend, help="detector")
    parser.add_argument(
        "--drop-undecided-serbian",
        action="store_true",
        help="do not keep Latin text whose words read as Serbian, Croatian and Bosnian alike for Serbian",
    )
    parser.add_argument(
        "--page-lang",
        help="the page's declared language (<html lang> or og:locale, e.g. sr-Latn-RS) for every line: the prior "
        "the pipeline uses for close calls",
    )
    parser.add_argument(
        "--page-url",
        help="the page's address for every line: its national domain (.rs, .hr) is the prior when "
        "--page-lang is absent or English",
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
    identifier = LanguageIdentifier(args.backend, targets, accept_undecided_serbian=not args.drop_undecided_serbian)
    prior = page_language(args.page_lang, None, args.page_url).code
    stdin = sys.stdin.buffer
    batch: list[str] = []

    def flush() -> None:
        for detection in identify_many(identifier, batch, [prior] * len(batch)):
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
