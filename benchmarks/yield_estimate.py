"""What a Common Crawl run of the paper's size costs, from a lake's yield funnel and the benchmark figures.

python -m benchmarks.yield_estimate [--lake PATH] [--pairs 6800000] [--split even|pages] [--records-per-page R]
                                   [--output FILE]

Inputs:

- the lake's ``yield_by_language`` view (``all`` crawls): per language, candidates per page, kept alt texts per
  candidate, images per kept alt text, SFT records per page (and selected pages per extracted page where the lake
  holds a ``cc_selection``);
- Common Crawl's pages per primary language in one crawl (:data:`CC_PAGES`, CC-MAIN-2024-42, CLD2 labels, from
  Common Crawl's published crawl statistics);
- throughputs (:data:`FIGURES`): the row of the same name in ``benchmarks/results/latest.json`` (CPU, per core) or
  ``gpu_h100.json`` (GPU) where a run wrote one, else the figure measured when the benchmark was added.

Output: per language, the pages (and crawls) needed for its share of ``--pairs`` records, and core-hours per CPU
stage and GPU-hours per model stage. The estimate scales the lake's ratios linearly: a demo lake's pages are
image-rich and hand-written, so its records per page are far above Common Crawl's; run it on a lake built from a
sample of the crawl you mean to process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mella_assets.languages import LANGUAGES
from mella_assets.lib.catalog import ALL_CRAWLS, yield_funnel
from mella_assets.lib.lake import open_lake
from mella_assets.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_PAIRS = 6_800_000  # the MELLA paper's dataset: image-text pairs over its 8 languages
CRAWL = "CC-MAIN-2024-42"
# Pages whose primary language (CLD2) is this ISO 639-3 code in CC-MAIN-2024-42 (Common Crawl's cc-crawl-statistics).
CC_PAGES = {
    "rus": 150_800_000,
    "ces": 26_500_000,
    "vie": 26_100_000,
    "kor": 18_400_000,
    "ara": 16_700_000,
    "hun": 14_100_000,
    "tha": 10_200_000,
    "srp": 5_400_000,
}


@dataclass(frozen=True)
class Figure:
    """One throughput: items per second on one CPU core (or one GPU), where it comes from, what it counts."""

    stage: str  # the estimate's stage
    per_second: float
    unit: str
    source: str  # a benchmark row's name (looked up in the results files) and how it was measured
    device: str = "core"  # "core" or "gpu"


# Figures measured on this repository's 2-core CPU box and a lent H100, as the benchmarks first reported them; a
# newer row of the same name in benchmarks/results/ replaces them (see :func:`figures`).
FIGURES = (
    Figure(
        "range reads + extraction",
        335.0,
        "pages",
        "cc selection + range extraction: one language's pages per CPU second",
    ),
    Figure(
        "alt-text filters",
        1586.0,
        "candidates",
        "alt-text filters on the labelled set (credits, lexicons, site, names, page gate, language ID)",
    ),
    Figure("image validation", 29.0, "images", "image validate + re-encode + hash"),
    Figure("dataset build", 135_630.0, "records", "dataset dedup + split (build_sft_records)"),
    Figure("captions", 9.4, "images", "gpu_h100.json caption batch_32 (2B Qwen2-VL shape, 64 new tokens)", "gpu"),
    Figure(
        "translations", 64.8, "sentences", "gpu_h100.json translation batch_128 (NLLB-600M shape, 48 tokens)", "gpu"
    ),
)


def figures(results: Path = RESULTS) -> list[Figure]:
    """:data:`FIGURES`, each replaced by the latest run's median where ``latest.json`` (by row name) or
    ``gpu_h100.json`` (the GPU stages) has it."""
    rates: dict[str, float] = {}
    latest = results / "latest.json"
    if latest.exists():
        by_row = {row["stage"]: float(row["ours"]) for row in json.loads(latest.read_text())["rows"]}
        rates = {f.stage: by_row[f.source] for f in FIGURES if f.source in by_row}
    gpu_file = results / "gpu_h100.json"
    if gpu_file.exists():
        gpu = json.loads(gpu_file.read_text())
        rates["captions"] = gpu["caption"]["batch_32"]["images_per_s"]
        rates["translations"] = gpu["translation"]["batch_128"]["sentences_per_s"]
    return [dataclasses.replace(f, per_second=rates.get(f.stage, f.per_second)) for f in FIGURES]


def lake_ratios(funnel: pl.DataFrame) -> pl.DataFrame:
    """Per language, the ratios the estimate scales, from a :func:`~mella_assets.lib.catalog.yield_funnel` frame
    (every crawl together)."""
    wide = (
        funnel.filter(pl.col("crawl") == ALL_CRAWLS)
        .pivot(on="stage", index="language", values="rows")
        .fill_null(0)
        .filter(pl.col("pages") > 0)
    )
    selected = pl.col("selected_pages") if "selected_pages" in wide.columns else pl.col("pages")
    return wide.select(
        "language",
        "pages",
        (selected / pl.col("pages")).alias("selected_per_page"),
        (pl.col("candidates") / pl.col("pages")).alias("candidates_per_page"),
        (pl.col("kept_alt_texts") / pl.col("pages")).alias("kept_per_page"),
        (pl.col("images") / pl.col("pages")).alias("images_per_page"),
        (pl.col("d_know_pairs") / pl.col("pages")).alias("d_know_per_page"),
        (pl.col("d_ling_pairs") / pl.col("pages")).alias("d_ling_per_page"),
        (pl.col("sft_records") / pl.col("pages")).alias("records_per_page"),
    ).sort("language")


def assume_records_per_page(ratios: pl.DataFrame, records_per_page: float) -> pl.DataFrame:
    """``ratios`` with every step after the candidates scaled so that records per page is ``records_per_page``: the
    lake's funnel shape under another yield (a sample of the crawl gives the real one)."""
    after_candidates = ["kept_per_page", "images_per_page", "d_know_per_page", "d_ling_per_page", "records_per_page"]
    factor = records_per_page / pl.col("records_per_page")
    return ratios.with_columns([(pl.col(c) * factor).alias(c) for c in after_candidates])


def targets(codes: list[str], pairs: int, split: str) -> dict[str, float]:
    """Records wanted per language: ``pairs`` split evenly, or in proportion to Common Crawl's pages."""
    if split == "even":
        return {code: pairs / len(codes) for code in codes}
    weights = {code: _cc_pages(code) or 0 for code in codes}
    total = sum(weights.values())
    return {code: pairs * weight / total for code, weight in weights.items()}


def _cc_pages(code: str) -> int | None:
    language = LANGUAGES.get(code)
    return next((CC_PAGES[c] for c in (language.iso639_3 if language else ()) if c in CC_PAGES), None)


def estimate(ratios: pl.DataFrame, wanted: dict[str, float], rates: list[Figure]) -> pl.DataFrame:
    """Per language: pages to extract and select, crawls that holds, and hours per stage (core- or GPU-hours)."""
    rows = []
    for row in ratios.iter_rows(named=True):
        code = row["language"]
        if not row["records_per_page"] or code not in wanted:
            continue
        pages = wanted[code] / row["records_per_page"]
        selected = pages * row["selected_per_page"]
        cc_pages = _cc_pages(code)
        # Items each stage handles: captions are made for every stored image, translations for every caption.
        items = {
            "range reads + extraction": selected,
            "alt-text filters": pages * row["candidates_per_page"],
            "image validation": pages * row["kept_per_page"],
            "dataset build": wanted[code],
            "captions": pages * row["images_per_page"],
            "translations": pages * row["images_per_page"],
        }
        hours = {f"{f.stage} ({f.device}-h)": items[f.stage] / f.per_second / 3600 for f in rates}
        rows.append(
            {
                "language": code,
                "records_wanted": round(wanted[code]),
                "records_per_page": row["records_per_page"],
                "pages_needed": round(pages),
                "selected_pages_needed": round(selected),
                f"cc_pages_{CRAWL}": cc_pages,
                "crawls_needed": selected / cc_pages if cc_pages else None,
                **hours,
            }
        )
    return pl.DataFrame(rows)


def render(lake: str, ratios: pl.DataFrame, plan: pl.DataFrame, rates: list[Figure], pairs: int, split: str) -> str:
    hour_columns = [c for c in plan.columns if c.endswith("-h)")]
    totals = plan.select(pl.col(c).sum() for c in hour_columns)
    lines = [
        "# Yield estimate: Common Crawl pages and compute for the paper's size",
        "",
        f"Lake: `{lake}`; {pairs:,} records split {split} over {plan.height} languages; Common Crawl pages per",
        f"primary language from {CRAWL}. Hours are single-core CPU hours (`core-h`) or single-GPU hours (`gpu-h`).",
        "",
        "## The lake's yield (every crawl)",
        "",
        *_markdown(ratios),
        "",
        "## Pages and hours needed",
        "",
        *_markdown(plan),
        "",
        "Totals: " + ", ".join(f"{c} {totals[c][0]:,.1f}" for c in hour_columns) + ".",
        "",
        "## Throughputs used",
        "",
        *_markdown(
            pl.DataFrame(
                {
                    "stage": [f.stage for f in rates],
                    "per second": [f.per_second for f in rates],
                    "unit": [f"{f.unit}/{f.device}" for f in rates],
                    "benchmark row": [f.source for f in rates],
                }
            )
        ),
        "",
        "Not estimated: the columnar-index scan (selection), image downloads (network-bound; the CPU side is",
        "`image validation`), and Common Crawl's request rate limits on range reads.",
    ]
    return "\n".join(lines) + "\n"


def _markdown(frame: pl.DataFrame) -> list[str]:
    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default=load_settings().lake, help="lake folder or s3:// URI (default: $MELLA_LAKE)")
    parser.add_argument("--pairs", type=int, default=PAPER_PAIRS, help="records wanted over all languages")
    parser.add_argument(
        "--split", choices=("even", "pages"), default="even", help="per language: equal shares or by CC pages"
    )
    parser.add_argument(
        "--records-per-page",
        type=float,
        help="assume this many records per extracted page in every language (the lake's funnel scaled after the "
        "candidates step) instead of the lake's own yield",
    )
    parser.add_argument("--output", default=str(RESULTS / "yield_estimate.md"), help="Markdown file ('-': none)")
    args = parser.parse_args(argv)
    ratios = lake_ratios(yield_funnel(open_lake(args.lake)))
    if ratios.is_empty():
        raise SystemExit(f"{args.lake}: no pages in the lake (materialize raw_crawl through mella_dataset first)")
    if args.records_per_page:
        ratios = assume_records_per_page(ratios, args.records_per_page)
    rates = figures()
    plan = estimate(ratios, targets(ratios["language"].to_list(), args.pairs, args.split), rates)
    lake = args.lake + (f" (assumed {args.records_per_page:g} records per page)" if args.records_per_page else "")
    text = render(lake, ratios, plan, rates, args.pairs, args.split)
    print(text, end="")
    if args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
