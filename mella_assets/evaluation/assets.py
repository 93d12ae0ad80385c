"""Evaluation group: base vs previous vs latest fine-tuned model on each language's test split, the
cross-language report, and a check that warns on regressions."""

import dagster as dg
import polars as pl

from mella_assets.evaluation.report import render_score_chart, scores_markdown
from mella_assets.evaluation.scoring import regressions, score_samples
from mella_assets.lib.cache import JsonCache, batches, content_key
from mella_assets.lib.checkpoints import read_latest_checkpoint
from mella_assets.lib.openai_backend import ItemError
from mella_assets.lib.vlm import open_rgb_image
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, counts_by, preview_markdown, table_metadata
from mella_assets.resources.lake import Lake
from mella_assets.resources.models import Evaluator, ModelUnderTest
from mella_assets.resources.training import Training
from mella_assets.specs import GPU_POOL, language_of, stage_specs, table_result
from mella_assets.tables import (
    EVALUATION_REPORT,
    EVALUATION_SAMPLES,
    EVALUATION_SCORES,
    FINETUNED_CHECKPOINT,
    MELLA_DATASET,
)


class EvaluationConfig(dg.Config):
    max_new_tokens: int = 48
    """Longest generated answer, in tokens."""
    batch_size: int = 8
    """Test items per generate() call (openai backend: items whose requests are sent together, at most the
    evaluator's ``concurrency`` in flight)."""
    bootstrap_resamples: int = 1000
    """Bootstrap resamples per confidence interval."""
    seed: int = 0
    """Seed of the bootstrap (the same seed gives the same intervals)."""


def _generate_cached(
    lake: Lake, model: ModelUnderTest, items: pl.DataFrame, config: EvaluationConfig
) -> tuple[list[str], int]:
    """Answers of one model for the test items, each cached by (model version, item, params), and how many
    were generated (not read from the cache). An item the server refuses (openai backend: a 400 / 413 / 422) fails
    the asset naming it, after every other answer is cached: every model must answer the same items for the paired
    comparison, and a rerun asks only for what is missing."""
    keys = [content_key(model.version, rid, config.max_new_tokens) for rid in items["id"]]
    refused: dict[str, str] = {}

    def generate(missing: list[int]):
        backend = model.load()
        for batch in batches(missing, config.batch_size):
            outputs = backend.generate(
                [open_rgb_image(lake.get_bytes(items["image_key"][i])) for i in batch],
                [items["prompt"][i] for i in batch],
                max_new_tokens=config.max_new_tokens,
                batch_size=len(batch),
            )
            for i, output in zip(batch, outputs, strict=True):
                if isinstance(output, ItemError):
                    refused[items["id"][i]] = f"{output.reason}: {output.detail}"
                else:
                    yield i, {"text": output.text}

    values, computed = JsonCache(lake.store, "evaluation").get_or_compute(keys, generate)
    if refused:
        raise dg.Failure(
            f"{model.name}: the server refused {len(refused)} test item(s); every model must answer every item",
            metadata={"refused": dg.MetadataValue.json(dict(list(refused.items())[:20]))},
        )
    return [value["text"] for value in values], computed


def _checkpoint_model(lake: Lake, record: dict) -> tuple[str, str | None]:
    """(model path, adapter path or None) of a checkpoint record from ``checkpoints/LATEST.json``."""
    checkpoint_path = str(lake.local_dir(record["checkpoint_key"]))
    if record["method"] == "lora":
        return lake.resolve_model(record["base_model"]), checkpoint_path
    return checkpoint_path, None


@dg.multi_asset(
    name="evaluation_scores",
    specs=stage_specs("evaluation_scores", deps=[MELLA_DATASET, FINETUNED_CHECKPOINT]),
    pool=GPU_POOL,
)
@watched_stage
def evaluation_scores(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    evaluator: Evaluator,
    config: EvaluationConfig,
) -> tuple[dg.MaterializeResult, ...]:
    """The base model, the previous checkpoint (when there is one) and the latest fine-tuned checkpoint answer
    every test item of the language, in-process or through an OpenAI-compatible server serving them (the
    ``evaluator`` resource); keyword accuracy (know), METEOR and chrF (ling) per model with seeded bootstrap
    intervals and paired deltas. Per-sample outputs go to ``evaluation_samples``."""
    timer = StageTimer()
    language = language_of(context)
    test = lake.read(MELLA_DATASET, language).filter(pl.col("split") == "test")
    latest = read_latest_checkpoint(lake.store)
    if latest is None:
        raise dg.Failure("no fine-tuned checkpoint yet: materialize finetuned_checkpoint first")
    checkpoints = {"finetuned": latest}
    previous = latest.get("previous_checkpoint")
    if previous and lake.exists(previous["checkpoint_key"]):
        if evaluator.addresses_each_checkpoint():
            checkpoints = {"previous": previous, **checkpoints}
        else:
            context.log.warning(
                f"the previous checkpoint is not evaluated: the served name {evaluator.checkpoint_model_name!r} "
                "has no {checkpoint_id}, so it only addresses the latest checkpoint"
            )
    models = {"base": evaluator.base(training.base_model, lake.resolve_model)} | {
        role: evaluator.checkpoint(record, lambda r=record: _checkpoint_model(lake, r))
        for role, record in checkpoints.items()
    }
    frames, generated = [], {}
    for role, model in models.items():
        version = model.version
        answers, generated[role] = _generate_cached(lake, model, test, config)
        frames.append(
            test.select("id", "source", "image_sha256", "prompt", pl.col("text").alias("reference")).with_columns(
                pl.lit(language.code).alias("language"),
                pl.lit(role).alias("model"),
                pl.lit(version).alias("model_version"),
                pl.lit(checkpoints[role]["checkpoint_key"] if role in checkpoints else "").alias("checkpoint_key"),
                pl.Series("output", answers, dtype=pl.String),
            )
        )
    samples = pl.concat(frames)
    scored, scores = score_samples(samples, language, n_resamples=config.bootstrap_resamples, seed=config.seed)
    scores = scores.with_columns(pl.lit(latest["checkpoint_key"]).alias("checkpoint_key"))
    lake.write(EVALUATION_SAMPLES, language, scored)
    lake.write(EVALUATION_SCORES, language, scores)
    return table_result(
        EVALUATION_SCORES,
        scores,
        table_metadata(
            timer=timer,
            rows_in=test.height,
            output=scores,
            unit="items",
            extra={
                "checkpoint_key": latest["checkpoint_key"],
                "previous_checkpoint_key": previous["checkpoint_key"] if "previous" in checkpoints else "",
                "backend": evaluator.backend,
                "models": dg.MetadataValue.json({role: model.name for role, model in models.items()}),
                "generated": dg.MetadataValue.json(generated),
                "scores": dg.MetadataValue.md(scores_markdown(scores)),
                "samples": dg.MetadataValue.md(
                    preview_markdown(scored.select("model", "source", "reference", "output"))
                ),
            },
        ),
    ), table_result(
        EVALUATION_SAMPLES,
        scored,
        {
            "by_model": dg.MetadataValue.json(counts_by(scored, "model")),
            "preview": dg.MetadataValue.md(preview_markdown(scored.select("model", "source", "reference", "output"))),
        },
    )


@dg.multi_asset(name="evaluation_report", specs=stage_specs("evaluation_report", deps=[EVALUATION_SCORES]))
def evaluation_report(lake: Lake) -> dg.MaterializeResult:
    """Per-language table (base, previous, current, delta with its paired interval, current's interval) in
    Markdown metadata and a chart in the lake."""
    timer = StageTimer()
    scores = lake.read_all_languages(EVALUATION_SCORES)
    lake.write(EVALUATION_REPORT, None, scores)
    chart_key = "reports/evaluation_report.png"
    lake.put_bytes(chart_key, render_score_chart(scores))
    table = scores_markdown(scores)
    lake.put_bytes("reports/evaluation_report.md", table.encode("utf-8"))
    worse = regressions(scores)
    return table_result(
        EVALUATION_REPORT,
        scores,
        {
            "rows_in": scores.height,
            "languages": scores["language"].n_unique(),
            "report": dg.MetadataValue.md(table),
            "chart_uri": dg.MetadataValue.url(lake.uri(chart_key)),
            "regressions": worse.height,
            "wall_seconds": round(timer.seconds, 3),
        },
    )


@dg.asset_check(
    asset=EVALUATION_REPORT.name,
    description="Warns when the latest checkpoint is worse than the previous one beyond the paired bootstrap "
    "interval on any language and metric.",
)
def evaluation_report_no_regression(lake: Lake) -> dg.AssetCheckResult:
    scores = lake.read_or_empty(EVALUATION_REPORT)
    worse = regressions(scores)
    details = [
        f"{row['language']} {row['metric']}: {row['delta']:+.4f} "
        f"[{row['delta_ci_low']:+.4f}, {row['delta_ci_high']:+.4f}]"
        for row in worse.iter_rows(named=True)
    ]
    return dg.AssetCheckResult(
        passed=worse.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "regressions": len(details),
            "details": dg.MetadataValue.json(details),
            "compared": int(
                scores.filter(pl.col("compared_to") == "previous").height if "compared_to" in scores.columns else 0
            ),
        },
    )
