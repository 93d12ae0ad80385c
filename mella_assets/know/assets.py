"""Know stage: alt texts that pass the language-aware filters, their images, and D_know (cultural knowledge)."""

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.know.filters import DEFAULT_FILTER_CONFIG as DEFAULT
from mella_assets.know.filters import FilterConfig, filter_alt_texts
from mella_assets.know.image_fetch import fetch_images
from mella_assets.lib.text import keywords
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.specs import language_of, stage_specs, table_result
from mella_assets.tables import (
    ALT_TEXT_PAIRS,
    ALT_TEXT_REJECTS,
    CANDIDATE_PAGE_COLUMNS,
    D_KNOW,
    IMAGE_REJECTS,
    IMAGES,
    RAW_CRAWL,
)

PAGE_COLUMNS = list(CANDIDATE_PAGE_COLUMNS)


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


@dg.multi_asset(name="alt_text_pairs", specs=stage_specs("alt_text_pairs", deps=[RAW_CRAWL]))
@watched_stage
def alt_text_pairs(
    context: dg.AssetExecutionContext, config: AltTextFilterConfig, lake: Lake, langid: LanguageIdentification
) -> tuple[dg.MaterializeResult, ...]:
    """(image url, native alt text) pairs that pass the text filters; the rest go to ``alt_text_rejects``
    with a reason (missing/empty alt, file name, boilerplate, length, wrong language, duplicate, opt-out…)."""
    timer = StageTimer()
    language = language_of(context)
    candidates = explode_candidates(lake.read(RAW_CRAWL, language))
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
    lake.write(ALT_TEXT_PAIRS, language, result.kept)
    lake.write(ALT_TEXT_REJECTS, language, rejects)
    # Pages per language prior (their lang / og:locale / domain / site): how much the page signals decided.
    priors = pl.concat([result.kept, result.rejects], how="diagonal_relaxed").unique("page_url")
    by_prior = priors.group_by("page_language").len().sort("page_language", nulls_last=True)
    return table_result(
        ALT_TEXT_PAIRS,
        result.kept,
        table_metadata(
            timer=timer,
            rows_in=candidates.height,
            output=result.kept,
            rejects=rejects,
            extra={
                "pages_by_page_language": dg.MetadataValue.json(
                    {code or "none": n for code, n in zip(by_prior["page_language"], by_prior["len"], strict=True)}
                )
            },
        ),
    ), table_result(ALT_TEXT_REJECTS, rejects)


@dg.multi_asset(name="images", specs=stage_specs("images", deps=[ALT_TEXT_PAIRS]))
@watched_stage
def images(context: dg.AssetExecutionContext, lake: Lake, fetcher: ImageFetcher) -> tuple[dg.MaterializeResult, ...]:
    """Every distinct image of the kept pairs, downloaded politely (robots.txt, per-host limits, retries) and
    safely (SSRF guard on every hop, size and time caps), decoded, validated, re-encoded and stored under its
    sha256; failures go to ``image_rejects`` with a reason and HTTP status. URLs already stored by an earlier
    run (duplicates too) are not fetched again, nor URLs whose reject would repeat (a 404, a non-image, an image
    failing unchanged limits; ``fetcher.retry_rejected`` retries them); transient failures are retried. Exact
    and near duplicates point at the first copy (column ``duplicate``)."""
    timer = StageTimer()
    language = language_of(context)
    urls = lake.read(ALT_TEXT_PAIRS, language)["image_url"].unique(maintain_order=True).to_list()
    outcome = fetch_images(
        language,
        urls,
        fetcher.http(),
        exists=lake.exists,
        put=lake.put_bytes,
        previous=lake.read_or_empty(IMAGES, language),
        previous_rejects=lake.read_or_empty(IMAGE_REJECTS, language),
        limits=fetcher.limits(),
        max_workers=fetcher.max_workers,
        retry_rejected=fetcher.retry_rejected,
    )
    lake.write(IMAGES, language, outcome.kept)
    lake.write(IMAGE_REJECTS, language, outcome.rejects)
    return table_result(
        IMAGES,
        outcome.kept,
        table_metadata(
            timer=timer,
            rows_in=len(urls),
            output=outcome.kept,
            rejects=outcome.rejects,
            unit="images",
            extra={
                "distinct_images": outcome.kept.filter(pl.col("duplicate").is_null()).height,
                "success_rate": round(outcome.kept.height / len(urls), 4) if urls else None,
                **outcome.stats,
            },
        ),
    ), table_result(IMAGE_REJECTS, outcome.rejects)


@dg.multi_asset(name="d_know", specs=stage_specs("d_know", deps=[ALT_TEXT_PAIRS, IMAGES]))
@watched_stage
def d_know(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The cultural-knowledge pairs: a stored image and its native alt text with its keywords, one row per
    distinct (image, alt text)."""
    timer = StageTimer()
    language = language_of(context)
    pairs = lake.read(ALT_TEXT_PAIRS, language)
    fetched = lake.read(IMAGES, language).drop("language")
    joined = pairs.select("image_url", "alt_text", "page_url", "domain").join(
        fetched, on="image_url", how="inner", maintain_order="left"
    )
    frame = (
        joined.unique(["image_sha256", "alt_text"], keep="first", maintain_order=True)
        .with_columns(
            pl.lit(language.code).alias("language"),
            pl.col("alt_text")
            .map_elements(lambda text: keywords(text, language), return_dtype=pl.List(pl.String))
            .alias("keywords"),
        )
        .select(
            "language",
            "image_sha256",
            "image_key",
            "phash",
            "alt_text",
            "keywords",
            "page_url",
            "domain",
            "image_url",
        )
    )
    lake.write(D_KNOW, language, frame)
    return table_result(
        D_KNOW,
        frame,
        table_metadata(
            timer=timer,
            rows_in=pairs.height,
            output=frame,
            extra={
                "pairs_without_image": pairs.height - pairs.join(fetched, on="image_url", how="semi").height,
                "duplicate_pairs": joined.height - frame.height,
            },
        ),
    )
