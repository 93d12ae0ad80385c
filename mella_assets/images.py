"""Know group, part 2: fetch, validate and store the images of the kept alt-text pairs, then join D_know."""

import dagster as dg
import polars as pl

from mella_assets.alt_text import alt_text_pairs
from mella_assets.languages import LANGUAGE_PARTITIONS, LANGUAGES
from mella_assets.lib.images import ImageReject, image_key, validate_image
from mella_assets.lib.text import keywords
from mella_assets.metadata import StageTimer, table_metadata
from resources.fetch import ImageFetcher
from resources.lake import Lake

IMAGES_SCHEMA = {
    "language": pl.String,
    "image_url": pl.String,
    "image_sha256": pl.String,
    "phash": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "format": pl.String,
    "bytes": pl.Int64,
    "image_key": pl.String,
}
IMAGE_REJECTS_SCHEMA = {
    "language": pl.String,
    "image_url": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "http_status": pl.Int64,
}


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[alt_text_pairs], kinds={"parquet"})
def images(context: dg.AssetExecutionContext, lake: Lake, fetcher: ImageFetcher) -> dg.MaterializeResult:
    """Every distinct image of the kept pairs, downloaded (SSRF-guarded, size-capped), decoded, validated and
    re-encoded into the lake under its sha256; failures go to ``image_rejects`` with a reason."""
    timer = StageTimer()
    language = context.partition_key
    urls = lake.read_table("alt_text_pairs", language)["image_url"].unique(maintain_order=True).to_list()
    results = fetcher.http().fetch_many(urls, max_workers=fetcher.max_workers)
    store = lake.store
    kept, rejects = [], []
    for result in results:
        if result.error_reason:
            rejects.append((result.url, result.error_reason, None, result.status))
            continue
        checked = validate_image(
            result.body,
            min_side=fetcher.min_side,
            max_pixels=fetcher.max_pixels,
            max_side_out=fetcher.max_side,
        )
        if isinstance(checked, ImageReject):
            rejects.append((result.url, checked.reason, checked.detail, result.status))
            continue
        key = image_key(checked.sha256, checked.ext)
        if not store.exists(key):
            store.put_bytes(key, checked.data)
        kept.append(
            (
                result.url,
                checked.sha256,
                checked.phash,
                checked.width,
                checked.height,
                checked.format,
                checked.bytes_in,
                key,
            )
        )
    frame = pl.DataFrame([(language, *row) for row in kept], schema=IMAGES_SCHEMA, orient="row")
    reject_frame = pl.DataFrame([(language, *row) for row in rejects], schema=IMAGE_REJECTS_SCHEMA, orient="row")
    lake.write_table("images", language, frame)
    lake.write_table("image_rejects", language, reject_frame)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=len(urls),
            output=frame,
            rejects=reject_frame,
            unit="images",
            extra={
                "distinct_images": frame["image_sha256"].n_unique(),
                "bytes_downloaded": int(frame["bytes"].sum() or 0),
            },
        )
    )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="know", deps=[alt_text_pairs, images], kinds={"parquet"})
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
