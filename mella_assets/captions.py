"""Ling group, part 1: detailed English captions of the language's images by an MLLM, cached by content."""

import io

import dagster as dg
from PIL import Image

from mella_assets.images import images
from mella_assets.lib.cache import JsonCache
from mella_assets.lib.captioning import CAPTIONS_SCHEMA, CaptionParams, caption_images
from mella_assets.lib.selection import select_images_for_captioning
from mella_assets.lib.vlm import load_caption_prompt
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.partitions import LANGUAGE_PARTITIONS
from resources.lake import Lake
from resources.models import Captioner

__all__ = ["CAPTIONS_SCHEMA", "load_image", "mllm_captions"]


def load_image(lake: Lake, key: str) -> Image.Image:
    """A stored image from the lake, as RGB."""
    return Image.open(io.BytesIO(lake.store.get_bytes(key))).convert("RGB")


# alt_text_pairs (read for the image domains) is upstream of images, so `images` alone orders the lineage.
@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[images], kinds={"parquet", "pytorch"})
@watched_stage
def mllm_captions(context: dg.AssetExecutionContext, lake: Lake, captioner: Captioner) -> dg.MaterializeResult:
    """An English caption per selected image (all validated images, or a deterministic sample with a per-domain
    cap). Each caption is cached by (image, model, prompt, params) — not by language — so a rerun, a resumed
    run or another language sharing the image only generates what is missing. Unreadable images and items a
    remote server refuses go to ``caption_rejects``."""
    timer = StageTimer()
    language = context.partition_key
    selection = select_images_for_captioning(
        lake.read_table("images", language),
        lake.read_table_or_empty("alt_text_pairs", language),
        limit=captioner.max_images_per_language,
        per_domain_cap=captioner.max_images_per_domain,
        seed=captioner.sample_seed,
    )
    model_path = captioner.model_path(lake.resolve_model)
    model_version = captioner.version(model_path)
    frame, rejects, run = caption_images(
        selection.chosen,
        read_image=lambda key: load_image(lake, key),
        load_backend=lambda: captioner.load(model_path),
        model_version=model_version,
        prompt=load_caption_prompt(captioner.prompt_version),
        cache=JsonCache(lake.store, "captions"),
        params=CaptionParams(max_new_tokens=captioner.max_new_tokens, max_pixels=captioner.max_pixels),
        batch_size=captioner.batch_size,
        language=language,
        model_id=captioner.model,
    )
    lake.write_table("mllm_captions", language, frame)
    lake.write_table("caption_rejects", language, rejects)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=selection.chosen.height,
            output=frame,
            rejects=rejects,
            unit="images",
            extra={
                **run.metadata("images"),
                "backend": captioner.backend,
                "model_version": model_version,
                "candidate_images": selection.candidates,
                "dropped_by_domain_cap": selection.dropped_by_domain_cap,
                "dropped_by_limit": selection.dropped_by_limit,
                "images_per_domain": dg.MetadataValue.json(selection.per_domain),
            },
        )
    )
