"""Know group, part 2: fetch, validate and store the images of the kept alt-text pairs, then join D_know."""

import dagster as dg
import polars as pl

from mella_assets.alt_text import alt_text_pairs
from mella_assets.languages import LANGUAGES
from mella_assets.lib.image_fetch import fetch_images
from mella_assets.lib.text import keywords
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.partitions import LANGUAGE_PARTITIONS
from resources.fetch import ImageFetcher
from resources.lake import Lake


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[alt_text_pairs], kinds={"parquet"})
@watched_stage
def images(context: dg.AssetExecutionContext, lake: Lake, fetcher: ImageFetcher) -> dg.MaterializeResult:
    """Every distinct image of the kept pairs, downloaded politely (robots.txt, per-host limits, retries) and
    safely (SSRF guard on every hop, size and time caps), decoded, validated, re-encoded and stored under its
    sha256; failures go to ``image_rejects`` with a reason and HTTP status. URLs already stored by an earlier
    run (duplicates too) are not fetched again, nor URLs whose reject would repeat (a 404, a non-image, an image
    failing unchanged limits; ``fetcher.retry_rejected`` retries them); transient failures are retried. Exact
    and near duplicates point at the first copy (column ``duplicate``)."""
    timer = StageTimer()
    language = context.partition_key
    urls = lake.read_table("alt_text_pairs", language)["image_url"].unique(maintain_order=True).to_list()
    store = lake.store
    outcome = fetch_images(
        language,
        urls,
        fetcher.http(),
        exists=store.exists,
        put=store.put_bytes,
        previous=lake.read_table_or_empty("images", language),
        previous_rejects=lake.read_table_or_empty("image_rejects", language),
        limits=fetcher.limits(),
        max_workers=fetcher.max_workers,
        retry_rejected=fetcher.retry_rejected,
    )
    lake.write_table("images", language, outcome.kept)
    lake.write_table("image_rejects", language, outcome.rejects)
    return dg.MaterializeResult(
        metadata=table_metadata(
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
        )
    )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[alt_text_pairs, images], kinds={"parquet"})
@watched_stage
def d_know(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The cultural-knowledge pairs: a stored image and its native alt text with its keywords, one row per
    distinct (image, alt text)."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    pairs = lake.read_table("alt_text_pairs", language.code)
    fetched = lake.read_table("images", language.code).drop("language")
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
    lake.write_table("d_know", language.code, frame)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=pairs.height,
            output=frame,
            extra={
                "pairs_without_image": pairs.height - pairs.join(fetched, on="image_url", how="semi").height,
                "duplicate_pairs": joined.height - frame.height,
            },
        )
    )
