"""Know stage: alt texts that pass the language-aware filters, their images, and D_know (cultural knowledge)."""

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.know.alt_kind import HEADLINE_OVER_MIX
from mella_assets.know.d_know_build import build_d_know
from mella_assets.know.filters import DEFAULT_FILTER_CONFIG as DEFAULT
from mella_assets.know.filters import FilterConfig
from mella_assets.know.image_fetch import fetch_images
from mella_assets.know.pairs import CANDIDATE_INDEX, judge_candidates
from mella_assets.languages import Language
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.partitions import SHARD_BACKFILL
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake, current_shards
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.settings import load_settings
from mella_assets.specs import NETWORK_RETRY, each_shard, language_of, progress_log, stage_specs, table_result
from mella_assets.tables import (
    ALT_TEXT_PAIRS,
    ALT_TEXT_REJECTS,
    D_KNOW,
    IMAGE_REJECTS,
    IMAGES,
    RAW_CRAWL,
)


class AltTextFilterConfig(dg.Config):
    """Thresholds of the alt-text filters (defaults: ``FilterConfig`` in ``lib/filters.py``)."""

    min_chars: dict[str, int] = Field(
        default_factory=dict, description="Per-language minimum characters, e.g. {'cs': 10} (default: registry)."
    )
    max_chars: dict[str, int] = Field(default_factory=dict, description="Per-language maximum characters.")
    min_words: dict[str, int] = Field(
        default_factory=dict, description="Per-language minimum word units, e.g. {'cs': 4} (default: registry, 3)."
    )
    max_char_run: int = Field(DEFAULT.max_char_run, description="Longest allowed run of one repeated sign.")
    max_unit_repeats: int = Field(DEFAULT.max_unit_repeats, description="Repeats of a 2-3 sign unit allowed.")
    pii: str = Field(DEFAULT.pii, description="E-mails / phone numbers: 'reject', 'redact' or 'keep'.")
    strip_credits: bool = Field(DEFAULT.strip_credits, description="Strip photo credits and bylines before judging.")
    site_repeat_min_pages: int = Field(
        DEFAULT.site_repeat_min_pages, description="Pages of one site an image+alt must be on to be furniture."
    )
    site_repeat_min_share: float = Field(
        DEFAULT.site_repeat_min_share, description="Share of the site's pages it must be on to be furniture."
    )
    page_language_gate: bool = Field(
        DEFAULT.page_language_gate, description="Reject alts of pages that declare another language."
    )
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
            min_words=dict(self.min_words),
            max_char_run=self.max_char_run,
            max_unit_repeats=self.max_unit_repeats,
            pii=self.pii,  # type: ignore[arg-type]
            strip_credits=self.strip_credits,
            site_repeat_min_pages=self.site_repeat_min_pages,
            site_repeat_min_share=self.site_repeat_min_share,
            page_language_gate=self.page_language_gate,
            close_ratio=self.close_ratio,
            min_confidence=dict(self.min_confidence),
        )


@dg.multi_asset(
    name="alt_text_pairs", specs=stage_specs("alt_text_pairs", deps=[RAW_CRAWL]), backfill_policy=SHARD_BACKFILL
)
@watched_stage
def alt_text_pairs(
    context: dg.AssetExecutionContext, config: AltTextFilterConfig, lake: Lake, langid: LanguageIdentification
) -> tuple[dg.MaterializeResult, ...]:
    """(image url, native alt text) pairs that pass the text filters; the rest go to ``alt_text_rejects``
    with a reason (missing/empty alt, file name, boilerplate, length, wrong language, duplicate, opt-out…). Each
    gets its ``alt_kind`` (caption, headline or description; ``know/alt_kind.py``), whose shares among the kept
    pairs are in the metadata. The body is ``know/pairs.py``, which ``mella extract --filter`` runs too."""
    return each_shard(context, lambda language, shard: _alt_text_pairs_shard(config, lake, langid, language, shard))


def _alt_text_pairs_shard(
    config: AltTextFilterConfig, lake: Lake, langid: LanguageIdentification, language: Language, shard: str
) -> tuple[dg.MaterializeResult, ...]:
    timer = StageTimer()
    judged = judge_candidates(
        lake.read(RAW_CRAWL, language, shard), language, langid.identifier([language]), config.filter_config()
    )
    kept, rejects = judged.kept.drop(CANDIDATE_INDEX), judged.rejects.drop(CANDIDATE_INDEX)
    lake.write(ALT_TEXT_PAIRS, language, kept, shard)
    lake.write(ALT_TEXT_REJECTS, language, rejects, shard)
    # Pages per language prior (their lang / og:locale / domain / site): how much the page signals decided.
    judged_pages = pl.concat([kept, rejects.filter(pl.col("reason") != "page_opt_out")], how="diagonal_relaxed")
    priors = judged_pages.unique("page_url")
    by_prior = priors.group_by("page_language").len().sort("page_language", nulls_last=True)
    return table_result(
        ALT_TEXT_PAIRS,
        kept,
        table_metadata(
            timer=timer,
            rows_in=judged.candidates,
            output=kept,
            rejects=rejects,
            extra={
                "pages_by_page_language": dg.MetadataValue.json(
                    {code or "none": n for code, n in zip(by_prior["page_language"], by_prior["len"], strict=True)}
                ),
                # Of the kept pairs: photo captions, headlines reused as alt texts, other descriptions.
                "alt_kind_shares": dg.MetadataValue.json(judged.kind_shares()),
            },
        ),
    ), table_result(ALT_TEXT_REJECTS, rejects)


@dg.multi_asset(
    name="images",
    specs=stage_specs("images", deps=[ALT_TEXT_PAIRS]),
    retry_policy=NETWORK_RETRY,
    backfill_policy=SHARD_BACKFILL,
)
@watched_stage
def images(context: dg.AssetExecutionContext, lake: Lake, fetcher: ImageFetcher) -> tuple[dg.MaterializeResult, ...]:
    """Every distinct image of the kept pairs, downloaded politely (robots.txt, per-host limits, retries) and
    safely (SSRF guard on every hop, size and time caps), decoded, validated, re-encoded and stored under its
    sha256; failures go to ``image_rejects`` with a reason and HTTP status. URLs already stored by an earlier
    run (duplicates too) are not fetched again, nor URLs whose reject would repeat (a 404, a non-image, an image
    failing unchanged limits; ``fetcher.retry_rejected`` retries them); transient failures are retried. Exact
    and near duplicates point at the first copy (column ``duplicate``)."""
    return each_shard(context, lambda language, shard: _images_shard(context, lake, fetcher, language, shard))


def _images_shard(
    context: dg.AssetExecutionContext, lake: Lake, fetcher: ImageFetcher, language: Language, shard: str
) -> tuple[dg.MaterializeResult, ...]:
    timer = StageTimer()
    urls = lake.read(ALT_TEXT_PAIRS, language, shard)["image_url"].unique(maintain_order=True).to_list()
    outcome = fetch_images(
        language,
        urls,
        fetcher.http(),
        exists=lake.exists,
        put=lake.put_bytes,
        previous=lake.read_or_empty(IMAGES, language, shard),
        previous_rejects=lake.read_or_empty(IMAGE_REJECTS, language, shard),
        limits=fetcher.limits(),
        max_workers=fetcher.max_workers,
        retry_rejected=fetcher.retry_rejected,
        progress=progress_log(context),
    )
    lake.write(IMAGES, language, outcome.kept, shard)
    lake.write(IMAGE_REJECTS, language, outcome.rejects, shard)
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
    """The cultural-knowledge pairs: a stored image and its native alt text with its keywords and ``alt_kind``, one
    row per distinct (image, alt text). ``MELLA_DKNOW_MAX_HEADLINE_SHARE`` caps the share of headline pairs: the
    excess, chosen by content hash, is dropped and counted as ``headline_over_mix``. Built by DuckDB over the
    language's shard files and written as it streams out (``know/d_know_build.py``): memory is bounded by a batch,
    not the language."""
    timer = StageTimer()
    language = language_of(context)
    settings = load_settings()
    max_headline_share = settings.dknow_max_headline_share
    built = build_d_know(
        lake.store, language, current_shards(), max_headline_share,
        lambda batches: lake.write_batches(D_KNOW, language, batches), memory_mb=settings.dknow_memory_mb,
    )  # fmt: skip
    metadata = table_metadata(
        timer=timer,
        rows_in=built.rows_in,
        output=built.preview,
        # Pairs whose image is not stored (see image_rejects) and repeats of an (image, alt text) pair.
        dropped={
            "no_stored_image": built.no_stored_image,
            "duplicate_pair": built.duplicate_pair,
            HEADLINE_OVER_MIX: built.headline_over_mix,
        },
        extra={
            "alt_kind_shares": dg.MetadataValue.json(built.kind_shares()),
            "max_headline_share": max_headline_share,
        },
    )
    # The table was written batch by batch: its counts come from the build, its preview from the first rows.
    return table_result(D_KNOW, built.preview, {**metadata, "rows_out": built.rows, "dagster/row_count": built.rows})
