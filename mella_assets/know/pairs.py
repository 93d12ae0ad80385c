"""The body of ``alt_text_pairs``, Dagster-free: raw_crawl pages in, kept pairs and rejects out, each with its
``alt_kind``. The asset and ``mella extract --filter`` both call :func:`judge_candidates`, so a filter setting tried
on a WARC from the command line decides exactly as the pipeline does (page and site priors included: they are
computed over the same candidates)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from mella_assets.know.alt_kind import kind_shares, with_alt_kind
from mella_assets.know.filters import DEFAULT_FILTER_CONFIG, FilterConfig, filter_alt_texts
from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.tables import CANDIDATE_PAGE_COLUMNS

PAGE_COLUMNS = list(CANDIDATE_PAGE_COLUMNS)
# Each candidate's position among the pages' candidates: kept and rejected rows merge back into page order with it.
CANDIDATE_INDEX = "candidate_index"


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


@dataclass(frozen=True)
class JudgedCandidates:
    """Kept pairs and rejects (``reason``) of one language, both with ``alt_kind`` and :data:`CANDIDATE_INDEX`."""

    candidates: int
    kept: pl.DataFrame
    rejects: pl.DataFrame

    def decisions(self) -> pl.DataFrame:
        """Every candidate once, in page order, with ``kept`` (bool) and ``reason`` (null when kept)."""
        kept = self.kept.with_columns(pl.lit(True).alias("kept"), pl.lit(None, dtype=pl.String).alias("reason"))
        rejects = self.rejects.with_columns(pl.lit(False).alias("kept"))
        return pl.concat([kept, rejects], how="diagonal_relaxed").sort(CANDIDATE_INDEX)

    def kind_shares(self) -> dict[str, float]:
        """Share of each alt kind among the kept pairs."""
        return kind_shares(self.kept)


def judge_candidates(
    pages: pl.DataFrame,
    language: Language,
    identifier: LanguageIdentifier,
    config: FilterConfig = DEFAULT_FILTER_CONFIG,
) -> JudgedCandidates:
    """Every image candidate of ``pages`` (raw_crawl rows of one language) judged by the alt-text filters.

    Pages that opt out of AI use (robots ``noai`` / ``noimageai``) contribute nothing: their candidates are rejects
    with reason ``page_opt_out``. Kept pairs and rejects get ``alt_kind`` (``know/alt_kind.py``) from their cleaned
    alt text and the extraction's evidence."""
    candidates = explode_candidates(pages).with_row_index(CANDIDATE_INDEX)
    opted_out = candidates["opt_out"].fill_null(False)
    result = filter_alt_texts(candidates.filter(~opted_out), language, identifier, config)
    opt_out_rejects = candidates.filter(opted_out).with_columns(
        pl.lit(None, dtype=pl.String).alias("alt_text"),
        pl.lit("page_opt_out").alias("reason"),
        pl.lit(language.code).alias("language"),
    )
    rejects = pl.concat([result.rejects, opt_out_rejects], how="diagonal_relaxed")
    return JudgedCandidates(candidates.height, with_alt_kind(result.kept), with_alt_kind(rejects))
