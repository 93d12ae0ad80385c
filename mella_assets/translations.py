"""Ling group, part 2: captions machine-translated into the language, checked, and joined into D_ling."""

import dagster as dg
import polars as pl

from mella_assets.captions import mllm_captions
from mella_assets.images import images
from mella_assets.languages import LANGUAGES
from mella_assets.lib.cache import JsonCache
from mella_assets.lib.translation import translate_cached, transliterate_serbian_to_latin
from mella_assets.lib.translation_qa import check_translations, length_bounds
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, table_metadata
from mella_assets.partitions import LANGUAGE_PARTITIONS
from resources.lake import Lake
from resources.langid import LanguageIdentification
from resources.models import Translator

TRANSLATIONS_SCHEMA = {
    "language": pl.String,
    "image_sha256": pl.String,
    "caption_en": pl.String,
    "text": pl.String,
    "translator_id": pl.String,
    "target_code": pl.String,
    "qa_detected_language": pl.String,
    "qa_language_confidence": pl.Float64,
    "qa_language_ok": pl.Boolean,
    "qa_length_ratio": pl.Float64,
    "qa_repeated_trigrams": pl.Float64,
    "qa_copied_share": pl.Float64,
    "reason": pl.String,
}


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[mllm_captions], kinds={"parquet", "pytorch"})
@watched_stage
def translations(
    context: dg.AssetExecutionContext, lake: Lake, translator: Translator, langid: LanguageIdentification
) -> dg.MaterializeResult:
    """Each English caption translated into the language (sentence by sentence, cached by content), with QA:
    empty output, repetition loops, untranslated copies, length ratio and output language. Failures go to
    ``translation_rejects`` with the reason."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    captions = lake.read_table("mllm_captions", language.code)
    model_path = translator.model_path(lake.resolve_model)
    version = translator.version(model_path)
    sources = captions["caption_en"].to_list()
    outputs, refused, run = translate_cached(
        sources,
        language.nllb_code,
        cache=JsonCache(lake.store, "translations"),
        model_version=version,
        load_backend=lambda: translator.load(model_path),
        params=translator.generation_params(),
        batch_size=translator.batch_size,
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
        (
            language.code,
            sha,
            source,
            text,
            translator.model,
            language.nllb_code,
            qa.detected_language,
            qa.language_confidence,
            qa.language_ok,
            qa.length_ratio,
            qa.repeated_trigrams,
            qa.copied_share,
            refusal or qa.reason,
        )
        for sha, source, text, refusal, qa in zip(
            captions["image_sha256"], sources, texts, refused, checks, strict=True
        )
    ]
    frame = pl.DataFrame(rows, schema=TRANSLATIONS_SCHEMA, orient="row")
    kept = frame.filter(pl.col("reason").is_null()).drop("reason")
    rejects = frame.filter(pl.col("reason").is_not_null())
    lake.write_table("translations", language.code, kept)
    lake.write_table("translation_rejects", language.code, rejects)
    return dg.MaterializeResult(
        metadata=table_metadata(
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
        )
    )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[translations, images], kinds={"parquet"})
@watched_stage
def d_ling(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The linguistic pairs: a stored image, its translated caption (``text``) and the English source."""
    timer = StageTimer()
    language = context.partition_key
    kept = lake.read_table("translations", language)
    stored = lake.read_table("images", language).unique("image_sha256").select("image_sha256", "image_key", "phash")
    frame = kept.join(stored, on="image_sha256", how="inner", maintain_order="left").select(
        "language", "image_sha256", "image_key", "phash", "text", "caption_en"
    )
    lake.write_table("d_ling", language, frame)
    return dg.MaterializeResult(metadata=table_metadata(timer=timer, rows_in=kept.height, output=frame))
