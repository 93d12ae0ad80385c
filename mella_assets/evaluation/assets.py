"""Evaluation group: base vs previous vs latest fine-tuned model on each language's test split, the
cross-language report, and a check that warns on regressions."""

from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from mella_assets.evaluation.report import chart_markdown, render_score_chart, scores_markdown
from mella_assets.evaluation.scoring import headline_scores, regressions, report_scores, score_samples
from mella_assets.lib.cache import ItemFailure, JsonCache, PerItemCalls, batches, content_key
from mella_assets.lib.checkpoints import read_latest_checkpoint
from mella_assets.lib.openai_backend import ItemError
from mella_assets.lib.progress import SILENT, ProgressLog
from mella_assets.lib.vlm import open_rgb_image
from mella_assets.lib.watchdog import deadline_passed, watched_stage
from mella_assets.metadata import StageTimer, counts_by, preview_markdown, preview_table, table_metadata
from mella_assets.resources.lake import Lake
from mella_assets.resources.models import Evaluator, ModelUnderTest
from mella_assets.resources.training import Training
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


@dataclass
class _Answers:
    """One model's answers to the test items (None where there is none yet), how many were generated now, and
    how many the stage deadline left unanswered."""

    texts: list[str | None]
    generated: int
    left: int


def _generate_cached(
    lake: Lake,
    model: ModelUnderTest,
    items: pl.DataFrame,
    config: EvaluationConfig,
    role: str = "model",
    progress: ProgressLog = SILENT,
) -> _Answers:
    """Answers of one model for the test items, each cached by (model version, item, params). An item the server
    refuses (openai backend: a 400 / 413 / 422) or whose generation raises fails the asset naming it, after every
    other answer is cached: every model must answer the same items for the paired comparison, and a rerun asks only
    for what is missing. Past the stage deadline no new batch starts: the answers not generated are counted as
    ``left`` (the asset fails naming them after the other models' cached answers are read)."""
    keys = [content_key(model.version, rid, config.max_new_tokens) for rid in items["id"]]
    refused: dict[str, str] = {}
    failed: dict[str, str] = {}
    left = 0
    calls = PerItemCalls()
    reporter = progress.loop(f"evaluation_scores ({role})", len(keys), unit="answers")

    def generate(missing: list[int]):
        nonlocal left
        reporter.start(already_done=len(keys) - len(missing))  # the rest is cached
        backend = None
        for number, batch in enumerate(batches(missing, config.batch_size)):
            if deadline_passed():
                left = len(missing) - number * config.batch_size
                return
            backend = backend or model.load()

            def answer(chosen: list[int], backend: Any = backend) -> list[Any]:
                return backend.generate(
                    [open_rgb_image(lake.get_bytes(items["image_key"][i])) for i in chosen],
                    [items["prompt"][i] for i in chosen],
                    max_new_tokens=config.max_new_tokens,
                    batch_size=len(chosen),
                )

            for i, output in zip(batch, calls(answer, batch, "generation_failed"), strict=True):
                if isinstance(output, ItemError):
                    refused[items["id"][i]] = f"{output.reason}: {output.detail}"
                elif isinstance(output, ItemFailure):
                    failed[items["id"][i]] = output.detail
                else:
                    yield i, {"text": output.text}
            reporter.advance(len(batch))
        calls.check_model()

    values, computed = JsonCache(lake.store, "evaluation").get_or_compute(keys, generate, stop_at_deadline=True)
    reporter.finish()
    for problems, what in ((refused, "the server refused"), (failed, "generation raised on")):
        if problems:
            raise dg.Failure(
                f"{model.name}: {what} {len(problems)} test item(s); every model must answer every item",
                metadata={"items": dg.MetadataValue.json(dict(list(problems.items())[:20]))},
                # A refusal (4xx) repeats; items that raised with a remote backend may have met an outage.
                allow_retries=problems is failed,
            )
    return _Answers([value["text"] if value else None for value in values], computed - left, left)


# Declarative automation (the automation condition sensor, sensors/evaluation.py, evaluates these) replaces the
# run-status sensors that chained training → evaluation → report.
_NEW_CHECKPOINT = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(
    dg.AssetSelection.assets(FINETUNED_CHECKPOINT.name)
)
# A new checkpoint → each language partition evaluated once, as soon as its dataset exists (a language without data
# waits for it without holding the others back) and nothing upstream of it is running.
EVALUATE_NEW_CHECKPOINT = (
    _NEW_CHECKPOINT.since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("a new checkpoint, for a language with data")
# A language that has data and a checkpoint newer than its scores still owes an evaluation.
_OWES_EVALUATION = (
    _NEW_CHECKPOINT.since(dg.AutomationCondition.newly_updated()) & ~dg.AutomationCondition.any_deps_missing()
).with_label("owes an evaluation")
# New scores → one report, once no language owes an evaluation or is being evaluated: the report of a checkpoint
# comes after its last language, not after each.
REPORT_AFTER_EVALUATIONS = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_match(
        _OWES_EVALUATION | dg.AutomationCondition.in_progress() | dg.AutomationCondition.will_be_requested()
    )
    & ~dg.AutomationCondition.in_progress()
).with_label("evaluations updated, none owed")


def _checkpoint_model(lake: Lake, record: dict) -> tuple[str, str | None]:
    """(model path, adapter path or None) of a checkpoint record from ``checkpoints/LATEST.json``."""
    checkpoint_path = str(lake.local_dir(record["checkpoint_key"]))
    if record["method"] == "lora":
        return lake.resolve_model(record["base_model"]), checkpoint_path
    return checkpoint_path, None


@dg.multi_asset(
    name="evaluation_scores",
    specs=[
        spec.replace_attributes(automation_condition=EVALUATE_NEW_CHECKPOINT)
        for spec in stage_specs("evaluation_scores", deps=[MELLA_DATASET, FINETUNED_CHECKPOINT])
    ],
    pool=GPU_POOL,
    retry_policy=NETWORK_RETRY,
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
        raise dg.Failure("no fine-tuned checkpoint yet: materialize finetuned_checkpoint first", allow_retries=False)
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
    with retried_only_when_remote(evaluator.backend != "transformers"):
        models = {"base": evaluator.base(training.base_model, lake.resolve_model)} | {
            role: evaluator.checkpoint(record, lambda r=record: _checkpoint_model(lake, r))
            for role, record in checkpoints.items()
        }
        answers = {
            role: _generate_cached(lake, model, test, config, role, progress_log(context))
            for role, model in models.items()
        }
    generated = {role: answer.generated for role, answer in answers.items()}
    left = {role: answer.left for role, answer in answers.items() if answer.left}
    if left:
        # Scores over the answered part would compare a non-random subset and feed the regression check: the
        # finished answers stay cached instead, and the rerun generates only the rest.
        raise dg.Failure(
            f"evaluation_scores reached its stage deadline with {sum(left.values())} of "
            f"{test.height * len(models)} answers left ({', '.join(f'{r}: {n}' for r, n in left.items())}); the "
            f"{sum(generated.values())} generated in this run are cached and a rerun generates only the rest. No "
            "scores were written: a paired comparison needs every model's answer to every item.",
            metadata={"left": dg.MetadataValue.json(left), "generated": dg.MetadataValue.json(generated)},
            allow_retries=False,  # the deadline bounds the stage's time; a retry would only extend it
        )
    frames = []
    for role, model in models.items():
        version = model.version
        frames.append(
            test.select("id", "source", "image_sha256", "prompt", pl.col("text").alias("reference")).with_columns(
                pl.lit(language.code).alias("language"),
                pl.lit(role).alias("model"),
                pl.lit(version).alias("model_version"),
                pl.lit(checkpoints[role]["checkpoint_key"] if role in checkpoints else "").alias("checkpoint_key"),
                pl.Series("output", answers[role].texts, dtype=pl.String),
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
            derived=True,  # test items in, one score row per (model, metric) out
            unit="items",
            extra={
                "checkpoint_key": latest["checkpoint_key"],
                "previous_checkpoint_key": previous["checkpoint_key"] if "previous" in checkpoints else "",
                "backend": evaluator.backend,
                "models": dg.MetadataValue.json({role: model.name for role, model in models.items()}),
                "generated": dg.MetadataValue.json(generated),
                "scores": dg.MetadataValue.md(scores_markdown(scores)),
                **{name: dg.MetadataValue.float(value) for name, value in headline_scores(scores).items()},
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
            "preview": preview_table(scored.select("model", "source", "reference", "output")),
        },
    )


@dg.multi_asset(
    name="evaluation_report",
    specs=[
        spec.replace_attributes(automation_condition=REPORT_AFTER_EVALUATIONS)
        for spec in stage_specs("evaluation_report", deps=[EVALUATION_SCORES])
    ],
)
def evaluation_report(lake: Lake) -> dg.MaterializeResult:
    """Per-language table (base, previous, current, delta with its paired interval, current's interval) in
    Markdown metadata, and a chart (values, 95% intervals) shown inline in the UI and stored in the lake."""
    timer = StageTimer()
    scores = lake.read_all_languages(EVALUATION_SCORES)
    lake.write(EVALUATION_REPORT, None, scores)
    chart_key = "reports/evaluation_report.png"
    chart = render_score_chart(scores)
    lake.put_bytes(chart_key, chart)
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
            "chart": dg.MetadataValue.md(chart_markdown(chart)),
            "chart_uri": dg.MetadataValue.path(lake.uri(chart_key)),
            "regressions": worse.height,
            "wall_seconds": round(timer.seconds, 3),
            **{name: dg.MetadataValue.float(value) for name, value in report_scores(scores).items()},
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
