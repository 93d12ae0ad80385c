"""Ling stage: English captions from an MLLM, their machine translations with QA, and D_ling (linguistic fluency)."""

import dagster as dg
import polars as pl

from mella_assets.lib.cache import JsonCache
from mella_assets.lib.vlm import load_caption_prompt, open_rgb_image
from mella_assets.lib.watchdog import watched_stage
from mella_assets.ling.captioning import CaptionParams, caption_images
from mella_assets.ling.selection import select_images_for_captioning
from mella_assets.ling.translation import translate_cached, transliterate_serbian_to_latin
from mella_assets.ling.translation_qa import check_translations, length_bounds
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Captioner, Translator
from mella_assets.specs import (
    GPU_POOL,
    NETWORK_RETRY,
    language_of,
    progress_log,
    retried_only_when_remote,
    stage_specs,
    table_result,
)
from mella_assets.tables import (
    ALT_TEXT_PAIRS,
    CAPTION_REJECTS,
    D_LING,
    IMAGES,
    MLLM_CAPTIONS,
    TRANSLATION_REJECTS,
    TRANSLATIONS,
)


# alt_text_pairs (read for the image domains) is upstream of images, so `images` alone orders the lineage.
@dg.multi_asset(
    name="mllm_captions", specs=stage_specs("mllm_captions", deps=[IMAGES]), pool=GPU_POOL, retry_policy=NETWORK_RETRY
)
@watched_stage
def mllm_captions(
    context: dg.AssetExecutionContext, lake: Lake, captioner: Captioner
) -> tuple[dg.MaterializeResult, ...]:
    """An English caption per selected image (all validated images, or a deterministic sample with a per-domain
    cap). Each caption is cached by (image, model, prompt, params) — not by language — so a rerun, a resumed
    run or another language sharing the image only generates what is missing. Unreadable images, items a
    remote server refuses, items whose generation raises and, at the stage deadline, the images not reached yet
    (``stage_deadline``: the captions finished are written) go to ``caption_rejects``; none is cached, so the
    next run captions only them."""
    timer = StageTimer()
    language = language_of(context)
    selection = select_images_for_captioning(
        lake.read(IMAGES, language),
        lake.read_or_empty(ALT_TEXT_PAIRS, language),
        limit=captioner.max_images_per_language,
        per_domain_cap=captioner.max_images_per_domain,
        seed=captioner.sample_seed,
    )
    with retried_only_when_remote(captioner.backend != "transformers"):
        model_path = captioner.model_path(lake.resolve_model)
        model_version = captioner.version(model_path)
        frame, rejects, run = caption_images(
            selection.chosen,
            read_image=lambda key: open_rgb_image(lake.get_bytes(key)),
            load_backend=lambda: captioner.load(model_path),
            model_version=model_version,
            prompt=load_caption_prompt(captioner.prompt_version),
            cache=JsonCache(lake.store, "captions"),
            params=CaptionParams(max_new_tokens=captioner.max_new_tokens, max_pixels=captioner.max_pixels),
            batch_size=captioner.batch_size,
            language=language.code,
            model_id=captioner.model,
            progress=progress_log(context),
        )
    lake.write(MLLM_CAPTIONS, language, frame)
    lake.write(CAPTION_REJECTS, language, rejects)
    return table_result(
        MLLM_CAPTIONS,
        frame,
        table_metadata(
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
        ),
    ), table_result(CAPTION_REJECTS, rejects)


@dg.multi_asset(
    name="translations",
    specs=stage_specs("translations", deps=[MLLM_CAPTIONS]),
    pool=GPU_POOL,
    retry_policy=NETWORK_RETRY,
)
@watched_stage
def translations(
    context: dg.AssetExecutionContext, lake: Lake, translator: Translator, langid: LanguageIdentification
) -> tuple[dg.MaterializeResult, ...]:
    """Each English caption translated into the language (sentence by sentence, cached by content), with QA:
    empty output, repetition loops, untranslated copies, length ratio and output language. Failures go to
    ``translation_rejects`` with the reason, as do captions whose translation raised (``translation_failed``) and,
    at the stage deadline, those not reached yet (``stage_deadline``: the finished ones are written); those are
    not cached, so the next run translates only them."""
    timer = StageTimer()
    language = language_of(context)
    captions = lake.read(MLLM_CAPTIONS, language)
    sources = captions["caption_en"].to_list()
    # A lake outage stays retryable either way; the model's own failures only with a remote backend.
    with retried_only_when_remote(translator.backend != "transformers"):
        model_path = translator.model_path(lake.resolve_model)
        version = translator.version(model_path)
        outputs, refused, run = translate_cached(
            sources,
            language.nllb_code,
            cache=JsonCache(lake.store, "translations"),
            model_version=version,
            load_backend=lambda: translator.load(model_path),
            params=translator.generation_params(),
            batch_size=translator.batch_size,
            progress=progress_log(context),
        )
    texts = [text or "" for text in outputs]
    if language.code == "sr" and translator.serbian_script == "latin":
        texts = [transliterate_serbian_to_latin(text) for text in texts]
    checks = check_translations(
        sources,
        texts,
        language,
        langid.identifier([language]),
        translator.enforce_output_language,
        length_bounds(language.code, translator.length_ratio_bounds),
    )
    rows = [
        {
            "language": language.code,
            "image_sha256": sha,
            "caption_en": source,
            "text": text,
            "translator_id": translator.model,
            "target_code": language.nllb_code,
            "qa_detected_language": qa.detected_language,
            "qa_language_confidence": qa.language_confidence,
            "qa_language_ok": qa.language_ok,
            "qa_length_ratio": qa.length_ratio,
            "qa_repeated_trigrams": qa.repeated_trigrams,
            "qa_copied_share": qa.copied_share,
            "reason": refusal or qa.reason,
        }
        for sha, source, text, refusal, qa in zip(
            captions["image_sha256"], sources, texts, refused, checks, strict=True
        )
    ]
    # Every translation with its QA verdict (the rejects' columns); the kept ones lose the empty `reason`.
    frame = pl.DataFrame(rows, schema=TRANSLATION_REJECTS.schema)
    kept = frame.filter(pl.col("reason").is_null()).drop("reason")
    rejects = frame.filter(pl.col("reason").is_not_null())
    lake.write(TRANSLATIONS, language, kept)
    lake.write(TRANSLATION_REJECTS, language, rejects)
    return table_result(
        TRANSLATIONS,
        kept,
        table_metadata(
            timer=timer,
            rows_in=captions.height,
            output=kept,
            rejects=rejects,
            unit="captions",
            extra={
                **run.metadata("captions"),
                "translated": run.cache_misses,
                "backend": translator.backend,
                "translator_version": version,
                "output_language_enforced": translator.enforce_output_language,
                "output_language_ok_share": round(float(frame["qa_language_ok"].mean() or 0.0), 3),
                "length_ratio_bounds": dg.MetadataValue.json(
                    list(length_bounds(language.code, translator.length_ratio_bounds))
                ),
            },
        ),
    ), table_result(TRANSLATION_REJECTS, rejects)


@dg.multi_asset(name="d_ling", specs=stage_specs("d_ling", deps=[TRANSLATIONS, IMAGES]))
@watched_stage
def d_ling(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The linguistic pairs: a stored image, its translated caption (``text``) and the English source."""
    timer = StageTimer()
    language = language_of(context)
    kept = lake.read(TRANSLATIONS, language)
    stored = lake.read(IMAGES, language).unique("image_sha256").select("image_sha256", "image_key", "phash")
    frame = kept.join(stored, on="image_sha256", how="inner", maintain_order="left").select(
        "language", "image_sha256", "image_key", "phash", "text", "caption_en"
    )
    lake.write(D_LING, language, frame)
    return table_result(D_LING, frame, table_metadata(timer=timer, rows_in=kept.height, output=frame))
