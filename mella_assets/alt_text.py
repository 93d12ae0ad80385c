"""Know group, part 1: image alt texts that pass the language-aware text filters."""

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.crawl import raw_crawl
from mella_assets.languages import LANGUAGES
from mella_assets.lib.filters import DEFAULT_FILTER_CONFIG as DEFAULT
from mella_assets.lib.filters import FilterConfig, filter_alt_texts
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.partitions import LANGUAGE_PARTITIONS
from resources.lake import Lake
from resources.langid import LanguageIdentification

PAGE_COLUMNS = [
    "page_url",
    "domain",
    "html_lang",
    "og_locale",
    "warc_uri",
    "record_offset",
    "opt_out",
    "opt_out_source",
]


def explode_candidates(pages: pl.DataFrame) -> pl.DataFrame:
    """One row per image candidate, with the columns of its page."""
    if pages.is_empty():
        return pl.DataFrame(
            schema={
                **{c: pages.schema[c] for c in PAGE_COLUMNS},
                **dict(pages.schema["images"].inner.to_schema()),
            }
        )
    exploded = pages.select([*PAGE_COLUMNS, "images"]).explode("images", empty_as_null=False, keep_nulls=False)
    return exploded.unnest("images")


class AltTextFilterConfig(dg.Config):
    """Thresholds of the alt-text filters (defaults: ``FilterConfig`` in ``lib/filters.py``)."""

    min_chars: dict[str, int] = Field(
        default_factory=dict, description="Per-language minimum characters, e.g. {'cs': 10} (default: registry)."
    )
    max_chars: dict[str, int] = Field(default_factory=dict, description="Per-language maximum characters.")
    min_words: int = Field(DEFAULT.min_words, description="Words a space-separated language needs.")
    max_char_run: int = Field(DEFAULT.max_char_run, description="Longest allowed run of one repeated sign.")
    max_unit_repeats: int = Field(DEFAULT.max_unit_repeats, description="Repeats of a 2-3 sign unit allowed.")
    pii: str = Field(DEFAULT.pii, description="E-mails / phone numbers: 'reject', 'redact' or 'keep'.")
    close_ratio: float = Field(DEFAULT.close_ratio, description="Language-ID close-call ratio (page decides).")
    min_confidence: dict[str, float] = Field(
        default_factory=dict, description="Per-language lowest language-ID confidence to keep."
    )

    def filter_config(self) -> FilterConfig:
        if self.pii not in {"reject", "redact", "keep"}:
            raise ValueError(f"pii must be 'reject', 'redact' or 'keep', not {self.pii!r}")
        return FilterConfig(
            min_chars=dict(self.min_chars),
            max_chars=dict(self.max_chars),
            min_words=self.min_words,
            max_char_run=self.max_char_run,
            max_unit_repeats=self.max_unit_repeats,
            pii=self.pii,  # type: ignore[arg-type]
            close_ratio=self.close_ratio,
            min_confidence=dict(self.min_confidence),
        )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[raw_crawl], kinds={"parquet"})
@watched_stage
def alt_text_pairs(
    context: dg.AssetExecutionContext, config: AltTextFilterConfig, lake: Lake, langid: LanguageIdentification
) -> dg.MaterializeResult:
    """(image url, native alt text) pairs that pass the text filters; the rest go to ``alt_text_rejects``
    with a reason (missing/empty alt, file name, boilerplate, length, wrong language, duplicate, opt-out…)."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    candidates = explode_candidates(lake.read_table("raw_crawl", language.code))
    # Pages that opt out of AI use (robots noai / noimageai) contribute nothing, and say so.
    opted_out = candidates.filter(pl.col("opt_out"))
    result = filter_alt_texts(
        candidates.filter(~pl.col("opt_out")), language, langid.identifier([language]), config.filter_config()
    )
    opt_out_rejects = opted_out.with_columns(
        pl.lit(None, dtype=pl.String).alias("alt_text"),
        pl.lit("page_opt_out").alias("reason"),
        pl.lit(language.code).alias("language"),
    )
    rejects = pl.concat([result.rejects, opt_out_rejects], how="diagonal_relaxed")
    lake.write_table("alt_text_pairs", language.code, result.kept)
    lake.write_table("alt_text_rejects", language.code, rejects)
    # Pages per language prior (their lang / og:locale / domain / site): how much the page signals decided.
    priors = pl.concat([result.kept, result.rejects], how="diagonal_relaxed").unique("page_url")
    by_prior = priors.group_by("page_language").len().sort("page_language", nulls_last=True)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=candidates.height,
            output=result.kept,
            rejects=rejects,
            extra={
                "pages_by_page_language": dg.MetadataValue.json(
                    {code or "none": n for code, n in zip(by_prior["page_language"], by_prior["len"], strict=True)}
                )
            },
        )
    )
