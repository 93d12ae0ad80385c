"""`mella extract WARC... --output OUT.parquet`: one row per image candidate, with the pipeline's own
extraction code (``crawl/warc.py`` + ``crawl/html/``).

With ``--language XX --filter`` every candidate also gets the alt-text filter's decision (``kept``, ``reason``,
``alt_kind``, the cleaned ``alt_text``, the page prior and language ID), from the very code of ``alt_text_pairs``
(``know/pairs.py``: page and site priors are computed over the candidates of all the WARCs given, as the asset
computes them over a language's raw_crawl): a filter setting (``--filter-config``) is tried on a WARC in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import polars as pl

from mella_assets.commands.cc_select import add_selection_arguments, run_selection
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.warc import WarcStats
from mella_assets.know.filters import FilterConfig
from mella_assets.know.pairs import CANDIDATE_INDEX, judge_candidates
from mella_assets.languages import LANGUAGES
from mella_assets.lib.langid import BACKENDS, LanguageIdentifier
from mella_assets.lib.progress import terminal_bar
from mella_assets.settings import load_settings
from mella_assets.tables import ALT_TEXT_PAIRS

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
    "link_text",
    "nearby_heading",
    "caption_markup",
    "charset",
    "opt_out",
    "warc_uri",
    "record_offset",
]


# The decision first, then the columns of alt_text_pairs (its names, so the two compare directly), then the reason.
DECISION_COLUMNS = ["kept", "reason", "alt_kind", "alt_text"]


def _pages(paths: list[str], stats: WarcStats, nearby_context: bool) -> pl.DataFrame:
    frames = []
    with terminal_bar(len(paths), "WARC files", "file") as bar:
        for path in paths:
            frames.append(extract_warc(path, stats, nearby_context=nearby_context))
            bar.set_postfix(pages=stats.html_pages, refresh=False)
            bar.update(1)
    return pl.concat(frames, how="vertical_relaxed")


def candidates(paths: list[str], stats: WarcStats, nearby_context: bool = False) -> pl.DataFrame:
    """The image candidates of the pages in ``paths`` (columns :data:`COLUMNS`); ``nearby_context``: as in
    :func:`mella_assets.crawl.html.extract_warc`."""
    pages = _pages(paths, stats, nearby_context)
    return (
        pages.explode("images", empty_as_null=False, keep_nulls=False)
        .unnest("images")
        .rename({"alt_raw": "alt", "html_lang": "page_lang"})
        .select(COLUMNS)
    )


def filtered_candidates(
    paths: list[str],
    stats: WarcStats,
    language: str,
    config: FilterConfig | None = None,
    backend: str = "lingua",
    nearby_context: bool = False,
) -> pl.DataFrame:
    """Every image candidate of the pages in ``paths`` in page order, with the decision of ``alt_text_pairs`` for
    ``language``: :data:`DECISION_COLUMNS`, then alt_text_pairs' columns (``detected_language`` and
    ``language_confidence`` null where language ID did not run)."""
    target = LANGUAGES[language]
    identifier = LanguageIdentifier(backend=backend, targets=[target])
    judged = judge_candidates(_pages(paths, stats, nearby_context), target, identifier, config or FilterConfig())
    decisions = judged.decisions().drop(CANDIDATE_INDEX)
    rest = [c for c in ALT_TEXT_PAIRS.columns if c not in DECISION_COLUMNS and c in decisions.columns]
    return decisions.select(*DECISION_COLUMNS, *rest)


def _filter_config(raw: str | None, parser: argparse.ArgumentParser) -> FilterConfig:
    """``--filter-config`` as a FilterConfig; a value that is not a JSON object of its fields is a usage error."""
    if not raw:
        return FilterConfig()
    names = {field.name for field in dataclasses.fields(FilterConfig)}
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as error:
        parser.error(f"--filter-config is not JSON: {error}")
    if not isinstance(values, dict) or set(values) - names:
        unknown = sorted(set(values) - names) if isinstance(values, dict) else values
        parser.error(f"--filter-config takes a JSON object of {sorted(names)}; not {unknown}")
    return FilterConfig(**values)


def run(args: argparse.Namespace) -> int:
    if args.selection or not args.warc:  # records read by range (commands/cc_select.py)
        return run_selection(args, COLUMNS)
    missing = [path for path in args.warc if not Path(path).is_file()]
    if missing:
        print(f"error: no such WARC file: {missing[0]}", file=sys.stderr)
        return 1
    stats = WarcStats()
    if args.filter:
        frame = filtered_candidates(
            args.warc, stats, args.language, args.filter_config, args.backend, nearby_context=args.nearby_context
        )
    else:
        frame = candidates(args.warc, stats, nearby_context=args.nearby_context)
    frame.write_parquet(args.output)
    decided = ""
    if args.filter:
        kept = frame.filter(pl.col("kept"))
        shares = ", ".join(f"{kind} {n}" for kind, n in kept["alt_kind"].value_counts(sort=True).iter_rows())
        decided = f"; {kept.height} kept for {args.language}" + (f" ({shares})" if shares else "")
    print(
        f"{frame.height} candidates from {stats.html_pages} pages ({stats.malformed} malformed, "
        f"{stats.skipped_non_html} non-HTML, {stats.skipped_status} non-200 skipped){decided} -> {args.output}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="image candidates of WARC files into a Parquet file")
    parser.add_argument("warc", nargs="*", help="WARC or WARC.gz files (or --selection and --warc-base)")
    add_selection_arguments(parser)
    parser.add_argument("--output", "-o", required=True, help="Parquet file to write")
    parser.add_argument(
        "--nearby-context",
        action="store_true",
        help="also take bounded nearby text (<= 200 chars) as context when an image has no <figcaption> "
        "(context_source 'nearby'); costs ~30%% of extraction speed",
    )
    parser.add_argument(
        "--filter",
        action="store_true",
        help="judge every candidate with the alt-text filters of alt_text_pairs (needs --language): adds kept, "
        "reason, alt_kind and the cleaned alt_text",
    )
    parser.add_argument("--language", choices=sorted(LANGUAGES), help="target language of --filter")
    parser.add_argument(
        "--filter-config",
        help='JSON object of filter settings (FilterConfig fields), e.g. \'{"min_words": 3, "pii": "redact"}\'',
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="language-ID backend (default: $MELLA_LANGID_BACKEND)"
    )

    def checked(args: argparse.Namespace) -> int:
        if args.filter and not args.language:
            parser.error("--filter needs --language")
        if (args.language or args.filter_config) and not args.filter:
            parser.error("--language and --filter-config go with --filter")
        args.filter_config = _filter_config(args.filter_config, parser)
        args.backend = args.backend or load_settings().langid_backend
        return run(args)

    parser.set_defaults(func=checked)
