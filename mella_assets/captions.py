"""Ling group, part 1: detailed English captions of the language's images by an MLLM, cached by content."""

import io

import dagster as dg
import polars as pl
from PIL import Image

from mella_assets.images import images
from mella_assets.languages import LANGUAGE_PARTITIONS
from mella_assets.lib.cache import JsonCache, batches, content_key, model_fingerprint
from mella_assets.lib.vlm import load_caption_prompt
from mella_assets.metadata import StageTimer, table_metadata
from resources.lake import Lake
from resources.models import Captioner

CAPTIONS_SCHEMA = {
    "language": pl.String,
    "image_sha256": pl.String,
    "image_key": pl.String,
    "model_id": pl.String,
    "prompt_version": pl.String,
    "caption_en": pl.String,
    "prompt_tokens": pl.Int64,
    "new_tokens": pl.Int64,
}


def load_image(lake: Lake, key: str) -> Image.Image:
    """A stored image from the lake, as RGB."""
    return Image.open(io.BytesIO(lake.store.get_bytes(key))).convert("RGB")


def select_images_for_captioning(fetched: pl.DataFrame, limit: int) -> pl.DataFrame:
    """Distinct images in a stable order (by sha256), at most ``limit`` of them (0 = all)."""
    chosen = fetched.unique("image_sha256").sort("image_sha256").select("image_sha256", "image_key")
    return chosen.head(limit) if limit > 0 else chosen


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[images], kinds={"parquet", "pytorch"})
def mllm_captions(context: dg.AssetExecutionContext, lake: Lake, captioner: Captioner) -> dg.MaterializeResult:
    """An English caption per selected image. Each caption is cached by (image, model, prompt, params), so a
    rerun or a resumed run only generates what is missing."""
    timer = StageTimer()
    language = context.partition_key
    chosen = select_images_for_captioning(lake.read_table("images", language), captioner.max_images_per_language)
    prompt = load_caption_prompt(captioner.prompt_version)
    model_path = lake.resolve_model(captioner.model)
    model_version = model_fingerprint(model_path)
    cache = JsonCache(lake.store, "captions")
    keys = [content_key(sha, model_version, prompt.version, captioner.max_new_tokens) for sha in chosen["image_sha256"]]

    def generate(missing: list[int]):
        model = captioner.load(model_path)
        for batch in batches(missing, captioner.batch_size):
            pictures = [load_image(lake, chosen["image_key"][i]) for i in batch]
            outputs = model.generate(
                pictures, [prompt.text] * len(batch), max_new_tokens=captioner.max_new_tokens, batch_size=len(batch)
            )
            for i, output in zip(batch, outputs, strict=True):
                yield i, {"text": output.text, "prompt_tokens": output.prompt_tokens, "new_tokens": output.new_tokens}

    captions, generated = cache.get_or_compute(keys, generate)
    frame = pl.DataFrame(
        [
            (
                language,
                sha,
                key_,
                captioner.model,
                prompt.version,
                c["text"],
                c["prompt_tokens"],
                c["new_tokens"],
            )
            for sha, key_, c in zip(chosen["image_sha256"], chosen["image_key"], captions, strict=True)
        ],
        schema=CAPTIONS_SCHEMA,
        orient="row",
    )
    lake.write_table("mllm_captions", language, frame)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=chosen.height,
            output=frame,
            unit="images",
            extra={
                "generated": generated,
                "from_cache": chosen.height - generated,
                "model_version": model_version,
                "new_tokens": int(frame["new_tokens"].sum() or 0),
            },
        )
    )
