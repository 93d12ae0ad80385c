"""Ling group, part 2: captions machine-translated into the language, checked, and joined into D_ling."""

import dagster as dg
import polars as pl

from mella_assets.captions import mllm_captions
from mella_assets.images import images
from mella_assets.languages import LANGUAGE_PARTITIONS, LANGUAGES
from mella_assets.lib.cache import JsonCache, content_key, model_fingerprint
from mella_assets.lib.translation import transliterate_serbian_to_latin
from mella_assets.lib.translation_qa import check_translation
from mella_assets.metadata import StageTimer, table_metadata
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
    "reason": pl.String,
}


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[mllm_captions], kinds={"parquet", "pytorch"})
def translations(
    context: dg.AssetExecutionContext, lake: Lake, translator: Translator, langid: LanguageIdentification
) -> dg.MaterializeResult:
    """Each English caption translated into the language (sentence by sentence, cached by content), with QA:
    output language, length ratio and repetition. Failures go to ``translation_rejects`` with the reason."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    captions = lake.read_table("mllm_captions", language.code)
    model_path = lake.resolve_model(translator.model)
    version = model_fingerprint(model_path)
    cache = JsonCache(lake.store, "translations")
    sources = captions["caption_en"].to_list()
    keys = [content_key(text, version, language.nllb_code, translator.max_new_tokens) for text in sources]

    def translate(missing: list[int]):
        # One call for everything missing: the translator batches sentences by length across captions.
        model = translator.load(model_path)
        texts = model.translate(
            [sources[i] for i in missing],
            target_code=language.nllb_code,
            max_new_tokens=translator.max_new_tokens,
            batch_size=translator.batch_size,
        )
        for i, text in zip(missing, texts, strict=True):
            yield i, {"text": text}

    values, translated = cache.get_or_compute(keys, translate)
    outputs = [value["text"] for value in values]
    if language.code == "sr" and translator.serbian_script == "latin":
        outputs = [transliterate_serbian_to_latin(text) for text in outputs]
    identifier = langid.identifier([language])
    rows = []
    for sha, source, text in zip(captions["image_sha256"], sources, outputs, strict=True):
        qa = check_translation(source, text, language, identifier, translator.enforce_output_language)
        rows.append(
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
                qa.reason,
            )
        )
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
            extra={
                "translated": translated,
                "from_cache": captions.height - translated,
                "translator_version": version,
                "output_language_enforced": translator.enforce_output_language,
                "output_language_ok_share": round(float(frame["qa_language_ok"].mean() or 0.0), 3),
            },
        )
    )


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="ling", deps=[translations, images], kinds={"parquet"})
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
