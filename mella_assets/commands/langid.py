"""`mella langid`: one line per stdin line, ``<code or und>\\t<confidence>``, with the pipeline's detector and
rules (script rules, CLD2 for clear texts, lingua for the rest, Serbian / Croatian / Bosnian words for Latin
Serbian).

A line is identified by its first :data:`MAX_LINE_CHARS` characters (cut back to the last space in the second half
of them, so that no word is cut), and no more than :data:`MAX_LINE_BYTES` bytes of a line are ever held: the rest
is read and dropped. The pipeline identifies alt texts and captions, a few hundred characters at most; lingua's
time grows faster than linearly with a text's length (one line of a single repeated letter: 4,000 characters 0.1 s,
16,000 1 s, 100,000 10 s; a 1 MB line did not finish in minutes), and a thousand characters say which language a
text is in as well as a million do.
"""

from __future__ import annotations

import argparse
import io
import select
import sys
from collections.abc import Iterator
from typing import BinaryIO

from mella_assets.languages import LANGUAGES, REGISTRY
from mella_assets.lib.langid import BACKENDS, LanguageIdentifier, identify_many, load_models_on_demand
from mella_assets.lib.page_language import page_language
from mella_assets.settings import load_settings

BATCH = 2048
# What of a line is identified (characters) and read (bytes: UTF-8 needs at most 4 a character).
MAX_LINE_CHARS = 1000
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS + 4
_DROP_BYTES = 1 << 16


def bounded_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Each line of ``stream`` (without its line break), cut to its first ``max_bytes`` bytes; the rest of a longer
    line is read in chunks and dropped, so memory stays bounded whatever the line's length."""
    while True:
        head = stream.readline(max_bytes + 1)
        if not head:
            return
        if len(head) > max_bytes and not head.endswith(b"\n"):
            while (rest := stream.readline(_DROP_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield head[:max_bytes].rstrip(b"\r\n")


def line_sample(raw: bytes, max_chars: int = MAX_LINE_CHARS) -> str:
    """The text identified for one line: its first ``max_chars`` characters, cut back to the last whitespace in
    their second half when the line is longer."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) <= max_chars:
        return text
    text = text[:max_chars]
    cut = max(text.rfind(" "), text.rfind("\t"))
    return text[:cut] if cut >= max_chars // 2 else text


def _input_waiting(stream: BinaryIO) -> bool:
    """Whether the next read of ``stream`` would not wait: its descriptor is readable (data or end of input). A
    stream without a descriptor counts as waiting input. Lines already in Python's buffer are not seen, so a
    batch may end early there: smaller batches, the same answers."""
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError, io.UnsupportedOperation):
        return True


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
    load_models_on_demand()  # answer the first line without loading every language's models first
    identifier = LanguageIdentifier(args.backend, targets, accept_undecided_serbian=not args.drop_undecided_serbian)
    prior = page_language(args.page_lang, None, args.page_url).code
    stdin = sys.stdin.buffer
    batch: list[str] = []

    def flush() -> None:
        for detection in identify_many(identifier, batch, [prior] * len(batch)):
            sys.stdout.write(f"{detection.label}\t{detection.confidence:.4f}\n")
        batch.clear()

    for raw in bounded_lines(stdin):
        batch.append(line_sample(raw))
        # A full batch, or nothing more to read yet (typed or piped slowly): answer what is here now, so the
        # first line is answered before the input ends; a file or fast pipe still fills whole batches.
        if len(batch) >= BATCH or not _input_waiting(stdin):
            flush()
            sys.stdout.flush()
    flush()
    sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = build_parser(
        subparsers.add_parser(
            "langid",
            help="language of each stdin line: <code|und>\\t<conf>",
            description=f"Language of each stdin line. A line is identified by its first {MAX_LINE_CHARS} characters.",
        )
    )
    parser.set_defaults(func=run)
