"""Know group, part 1: image alt texts that pass the language-aware text filters."""

import dagster as dg
import polars as pl

from mella_assets.crawl import raw_crawl
from mella_assets.languages import LANGUAGE_PARTITIONS, LANGUAGES
from mella_assets.lib.filters import filter_alt_texts
from mella_assets.metadata import StageTimer, table_metadata
from resources.lake import Lake
from resources.langid import LanguageIdentification

PAGE_COLUMNS = ["page_url", "domain", "html_lang", "og_locale", "warc_uri", "record_offset", "opt_out"]


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


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[raw_crawl], kinds={"parquet"})
def alt_text_pairs(
    context: dg.AssetExecutionContext, lake: Lake, langid: LanguageIdentification
) -> dg.MaterializeResult:
    """(image url, native alt text) pairs that pass the text filters; the rest go to ``alt_text_rejects``
    with a reason (missing/empty alt, file name, boilerplate, length, wrong language, duplicate, opt-out…)."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    candidates = explode_candidates(lake.read_table("raw_crawl", language.code))
    # Pages that opt out of AI use (robots noai / noimageai) contribute nothing, and say so.
    opted_out = candidates.filter(pl.col("opt_out"))
    result = filter_alt_texts(candidates.filter(~pl.col("opt_out")), language, langid.identifier([language]))
    opt_out_rejects = opted_out.with_columns(
        pl.lit(None, dtype=pl.String).alias("alt_text"),
        pl.lit("page_opt_out").alias("reason"),
        pl.lit(language.code).alias("language"),
    )
    rejects = pl.concat([result.rejects, opt_out_rejects], how="diagonal_relaxed")
    lake.write_table("alt_text_pairs", language.code, result.kept)
    lake.write_table("alt_text_rejects", language.code, rejects)
    return dg.MaterializeResult(
        metadata=table_metadata(timer=timer, rows_in=candidates.height, output=result.kept, rejects=rejects)
    )
