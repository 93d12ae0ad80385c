"""Alt-text precision: how many kept alt texts are useful image descriptions in the target language.

The labelled set (``benchmarks/data/alt_text_labelled.jsonl``, ~60 alt texts per language written for this
benchmark) holds, per language, captions, descriptions and reused headlines (labelled useful), captions with photo
credits (useful once stripped; ``expected`` is the cleaned text), and what must not be kept: every boilerplate
class of ``know/lexicons/``, the site's own name, an alt repeated on every page of a site (``every_page``), bare
names, credits alone, one- and two-word labels, text in another language, pages declaring another language. Each
row carries its page context: host, page language (``page_lang``; absent: the host's, null: silent), site name
(og:site_name) and title.

Each language's rows become one crawl: a page per row on its host (an ``every_page`` alt on every page of its
host, same image), run through ``filter_alt_texts`` with the pipeline's language ID. precision = kept useful /
kept; recall = kept useful / useful; an ``every_page`` row counts once (kept if any copy is kept). Target (issue
17): precision ≥ 0.90 at recall ≥ 0.90 per language. ``python -m benchmarks --only alt_text`` prints the table and
a reject-reason table and writes ``benchmarks/results/alt_text_precision.md``; the timing row compares the whole
filter with language ID alone on the same texts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.harness import Row, compare, machine, measure
from mella_assets.know.filters import DEFAULT_FILTER_CONFIG, FilterConfig, filter_alt_texts
from mella_assets.languages import REGISTRY
from mella_assets.lib.langid import LanguageIdentifier

DATA = Path(__file__).resolve().parent / "data" / "alt_text_labelled.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "alt_text_precision.md"
TARGETS = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")
MIN_PRECISION = 0.90
MIN_RECALL = 0.90


def load_labelled(path: Path = DATA) -> list[dict]:
    """The labelled rows, each with its position ``id`` in the file."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            rows.append({**json.loads(line), "id": number})
    return rows


def candidates_of(rows: list[dict]) -> pl.DataFrame:
    """The crawl a language's rows stand for: one page per row on its host (``every_page`` rows on every page of
    their host), with the page's language, title and site name; column ``item`` names the labelled row."""
    pages = [row for row in rows if not row.get("every_page")]
    records = []
    for row in pages:
        url = f"https://{row['host']}/clanek/{row['id']}"
        records.append(_record(row, url, f"https://{row['host']}/img/{row['id']}.jpg"))
    for row in rows:
        if row.get("every_page"):
            for page in (p for p in pages if p["host"] == row["host"]):
                url = f"https://{page['host']}/clanek/{page['id']}"
                records.append(_record({**page, "alt": row["alt"], "id": row["id"]}, url, _promo_image(row)))
    return pl.DataFrame(
        records,
        schema={
            "item": pl.Int64,
            "page_url": pl.String,
            "domain": pl.String,
            "image_url": pl.String,
            "alt_raw": pl.String,
            "html_lang": pl.String,
            "og_locale": pl.String,
            "title": pl.String,
            "site_name": pl.String,
        },
        orient="row",
    )


def _promo_image(row: dict) -> str:
    return f"https://{row['host']}/static/promo-{row['id']}.png"


def _record(row: dict, page_url: str, image_url: str) -> tuple:
    return (row["id"], page_url, row["host"], image_url, row["alt"], row["page_lang"], None, row["title"], row["site"])


@dataclass(frozen=True)
class Judged:
    """One labelled row and the filter's decision on it."""

    row: dict
    kept: bool
    reason: str | None  # the first copy's reason when rejected
    alt_text: str | None  # the cleaned alt text of its first copy


def judge(
    rows: list[dict], identifier: LanguageIdentifier, config: FilterConfig = DEFAULT_FILTER_CONFIG
) -> list[Judged]:
    """Every labelled row of one language judged by ``filter_alt_texts``."""
    language = REGISTRY[rows[0]["language"]]
    result = filter_alt_texts(candidates_of(rows), language, identifier, config)
    kept = set(result.kept["item"].to_list())
    first_copy = (
        pl.concat(
            [result.kept.with_columns(pl.lit(None, dtype=pl.String).alias("reason")), result.rejects], how="diagonal"
        )
        .unique("item", keep="first", maintain_order=True)
        .select("item", "reason", "alt_text")
    )
    by_item = {item: (reason, alt) for item, reason, alt in first_copy.iter_rows()}
    return [
        Judged(row, row["id"] in kept, None if row["id"] in kept else by_item[row["id"]][0], by_item[row["id"]][1])
        for row in rows
    ]


def scores(judged: list[Judged]) -> dict:
    """precision, recall, counts and the reject reasons of one language's judged rows."""
    kept = [j for j in judged if j.kept]
    useful = [j for j in judged if j.row["useful"]]
    true_pos = sum(1 for j in kept if j.row["useful"])
    return {
        "rows": len(judged),
        "useful": len(useful),
        "kept": len(kept),
        "precision": round(true_pos / len(kept), 4) if kept else 0.0,
        "recall": round(true_pos / len(useful), 4) if useful else 0.0,
        "reasons": dict(sorted(Counter(j.reason for j in judged if not j.kept).items())),
        "wrongly_kept": [j.row["alt"] for j in kept if not j.row["useful"]],
        "wrongly_rejected": [(j.row["alt"], j.reason) for j in judged if j.row["useful"] and not j.kept],
    }


def evaluate(identifier: LanguageIdentifier, rows: list[dict] | None = None) -> dict[str, dict]:
    """:func:`scores` per target language."""
    rows = rows if rows is not None else load_labelled()
    return {code: scores(judge([r for r in rows if r["language"] == code], identifier)) for code in TARGETS}


def render_markdown(table: dict[str, dict], info: dict) -> str:
    reasons = sorted({reason for entry in table.values() for reason in entry["reasons"]})
    lines = [
        "# Alt-text precision on the labelled set",
        "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}. Set: "
        f"`benchmarks/data/alt_text_labelled.jsonl`; target precision ≥ {MIN_PRECISION:.2f} at recall ≥ "
        f"{MIN_RECALL:.2f} per language (issue 17).",
        "",
        "| language | rows | useful | kept | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for code, entry in table.items():
        lines.append(
            f"| {code} | {entry['rows']} | {entry['useful']} | {entry['kept']} | {entry['precision']:.3f} "
            f"| {entry['recall']:.3f} |"
        )
    lines += ["", "## Rejects by reason", "", "| reason | " + " | ".join(table) + " |"]
    lines.append("|---|" + "---|" * len(table))
    for reason in reasons:
        lines.append(f"| {reason} | " + " | ".join(str(e["reasons"].get(reason, 0)) for e in table.values()) + " |")
    lines += ["", "## Misjudged rows", ""]
    for code, entry in table.items():
        for alt in entry["wrongly_kept"]:
            lines.append(f"- {code} kept, not useful: {alt}")
        for alt, reason in entry["wrongly_rejected"]:
            lines.append(f"- {code} rejected ({reason}), useful: {alt}")
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> list[Row]:
    rows = load_labelled()
    identifier = LanguageIdentifier("lingua")
    table = evaluate(identifier, rows)
    print("   lang  rows kept  precision recall")
    for code, entry in table.items():
        print(f"   {code:<5} {entry['rows']:>4} {entry['kept']:>4}  {entry['precision']:>9.3f} {entry['recall']:>6.3f}")
        for alt in entry["wrongly_kept"]:
            print(f"      kept, not useful: {alt}")
        for alt, reason in entry["wrongly_rejected"]:
            print(f"      rejected ({reason}), useful: {alt}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(render_markdown(table, machine()), encoding="utf-8")
    print(f"   wrote {RESULTS}")

    by_language = {code: [r for r in rows if r["language"] == code] for code in TARGETS}
    frames = {code: candidates_of(language_rows) for code, language_rows in by_language.items()}

    def whole_filter() -> int:
        for code, frame in frames.items():
            filter_alt_texts(frame, REGISTRY[code], identifier)
        return sum(frame.height for frame in frames.values())

    def language_id_only() -> int:
        for code, frame in frames.items():
            identifier.check_many(frame["alt_raw"].to_list(), REGISTRY[code], frame["html_lang"].to_list())
        return sum(frame.height for frame in frames.values())

    runs = 2 if quick else 5
    return [
        compare(
            "alt-text filters on the labelled set (credits, lexicons, site, names, page gate, language ID)",
            "candidates/s",
            measure(whole_filter, runs=runs),
            measure(language_id_only, runs=runs),
            "language ID alone on the same texts",
            precision={code: entry["precision"] for code, entry in table.items()},
            recall={code: entry["recall"] for code, entry in table.items()},
            reasons={code: entry["reasons"] for code, entry in table.items()},
            targets_met=all(e["precision"] >= MIN_PRECISION and e["recall"] >= MIN_RECALL for e in table.values()),
        )
    ]
