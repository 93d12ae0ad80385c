"""Evaluation group: base vs fine-tuned model on each language's test split, and the cross-language report."""

import dagster as dg
import polars as pl

from mella_assets.captions import load_image
from mella_assets.dataset import mella_dataset
from mella_assets.languages import LANGUAGE_PARTITIONS, LANGUAGES
from mella_assets.lib.cache import JsonCache, batches, content_key, model_fingerprint
from mella_assets.lib.checkpoints import read_latest_checkpoint
from mella_assets.lib.evaluation import SCORES_SCHEMA, score_samples
from mella_assets.lib.report import render_score_chart, scores_markdown
from mella_assets.metadata import StageTimer, preview_markdown, table_metadata
from mella_assets.training import finetuned_checkpoint
from resources.lake import Lake
from resources.models import load_vlm
from resources.training import Training


class EvaluationConfig(dg.Config):
    max_new_tokens: int = 48
    """Longest generated answer, in tokens."""
    batch_size: int = 8
    """Test items per generate() call."""


def _generate_cached(lake: Lake, model, version: str, items: pl.DataFrame, config: EvaluationConfig) -> list[str]:
    """Answers of one model for the test items; each cached by (model version, item, params)."""
    keys = [content_key(version, rid, config.max_new_tokens) for rid in items["id"]]

    def generate(missing: list[int]):
        for batch in batches(missing, config.batch_size):
            outputs = model().generate(
                [load_image(lake, items["image_key"][i]) for i in batch],
                [items["prompt"][i] for i in batch],
                max_new_tokens=config.max_new_tokens,
                batch_size=len(batch),
            )
            for i, output in zip(batch, outputs, strict=True):
                yield i, {"text": output.text}

    values, _ = JsonCache(lake.store, "evaluation").get_or_compute(keys, generate)
    return [value["text"] for value in values]


@dg.asset(
    partitions_def=LANGUAGE_PARTITIONS,
    group_name="evaluation",
    deps=[mella_dataset, finetuned_checkpoint],
    kinds={"pytorch", "parquet"},
)
def evaluation_scores(
    context: dg.AssetExecutionContext, lake: Lake, training: Training, config: EvaluationConfig
) -> dg.MaterializeResult:
    """The base and the latest fine-tuned model answer every test item of the language; keyword accuracy
    (know), METEOR and chrF (ling) per model. Per-sample outputs go to ``evaluation_samples``."""
    timer = StageTimer()
    language = LANGUAGES[context.partition_key]
    test = lake.read_table("mella_dataset", language.code).filter(pl.col("split") == "test")
    latest = read_latest_checkpoint(lake.store)
    if latest is None:
        raise dg.Failure("no fine-tuned checkpoint yet: materialize finetuned_checkpoint first")
    base_path = lake.resolve_model(training.base_model)
    checkpoint_path = str(lake.path(latest["checkpoint_key"]))
    adapter = checkpoint_path if latest["method"] == "lora" else None
    tuned_path = base_path if adapter else checkpoint_path
    models = {
        "base": (model_fingerprint(base_path), lambda: load_vlm(base_path)),
        "finetuned": (
            model_fingerprint(tuned_path, adapter),
            lambda: load_vlm(tuned_path, adapter),
        ),
    }
    frames = []
    for name, (version, loader) in models.items():
        answers = _generate_cached(lake, loader, version, test, config)
        frames.append(
            test.select("id", "source", "image_sha256", "prompt", pl.col("text").alias("reference")).with_columns(
                pl.lit(language.code).alias("language"),
                pl.lit(name).alias("model"),
                pl.lit(version).alias("model_version"),
                pl.Series("output", answers, dtype=pl.String),
            )
        )
    samples = pl.concat(frames) if frames else pl.DataFrame()
    scored, scores = score_samples(samples, language)
    lake.write_table("evaluation_samples", language.code, scored)
    lake.write_table("evaluation_scores", language.code, scores)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=test.height,
            output=scores,
            unit="items",
            extra={
                "checkpoint_key": latest["checkpoint_key"],
                "samples": dg.MetadataValue.md(
                    preview_markdown(scored.select("model", "source", "reference", "output"))
                ),
            },
        )
    )


@dg.asset(group_name="evaluation", deps=[evaluation_scores], kinds={"png", "parquet"})
def evaluation_report(lake: Lake) -> dg.MaterializeResult:
    """Cross-language table of base vs fine-tuned scores (Markdown in metadata) and a chart in the lake."""
    timer = StageTimer()
    scores = lake.store.read_table_all_languages("evaluation_scores")
    if scores.is_empty():
        scores = pl.DataFrame(schema=SCORES_SCHEMA)
    lake.write_table("evaluation_report", None, scores)
    chart_key = "reports/evaluation_report.png"
    lake.store.put_bytes(chart_key, render_score_chart(scores))
    table = scores_markdown(scores)
    lake.store.put_bytes("reports/evaluation_report.md", table.encode("utf-8"))
    return dg.MaterializeResult(
        metadata={
            "rows_in": scores.height,
            "languages": scores["language"].n_unique(),
            "report": dg.MetadataValue.md(table),
            "chart_uri": lake.store.uri(chart_key),
            "wall_seconds": round(timer.seconds, 3),
        }
    )
