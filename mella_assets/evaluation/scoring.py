"""Score model outputs on the test split: keyword accuracy on `know` items, METEOR and chrF on `ling` items, each
with a seeded bootstrap interval, and paired-bootstrap deltas between models (fine-tuned vs previous vs base)."""

from __future__ import annotations

import numpy as np
import polars as pl

from mella_assets.evaluation.metrics import (
    DEFAULT_RESAMPLES,
    chrf_from_statistics,
    chrf_interval,
    chrf_statistics,
    keyword_accuracy,
    mean_interval,
    meteor,
    meteor_tokens,
    paired_chrf_delta_interval,
    paired_mean_delta_interval,
)
from mella_assets.languages import Language
from mella_assets.tables import EVALUATION_SCORES

METRICS = ("keyword_accuracy", "meteor", "chrf")
METRIC_SOURCE = {"keyword_accuracy": "know", "meteor": "ling", "chrf": "ling"}
# Model roles in evaluation order; each is compared with the one before it that is present.
MODEL_ROLES = ("base", "previous", "finetuned")

SCORES_SCHEMA = {c: t for c, t in EVALUATION_SCORES.columns.items() if c != "checkpoint_key"}  # the asset adds the key


def score_items(samples: pl.DataFrame, language: Language) -> pl.DataFrame:
    """Per-sample scores: ``keyword_accuracy`` on know items (None when the reference has no keyword), ``meteor``
    (None when the reference has no token) and ``chrf`` (0-100) on ling items."""
    keyword, met, chrf_values = [], [], []
    for source, reference, output in samples.select("source", "reference", "output").iter_rows():
        reference, output = reference or "", output or ""
        if source == "know":
            keyword.append(keyword_accuracy(reference, output, language))
            met.append(None)
            chrf_values.append(None)
        else:
            keyword.append(None)
            met.append(meteor(reference, output, language) if meteor_tokens(reference, language) else None)
            chrf_values.append(chrf_from_statistics(chrf_statistics([reference], [output])))
    return samples.with_columns(
        pl.Series("keyword_accuracy", keyword, dtype=pl.Float64),
        pl.Series("meteor", met, dtype=pl.Float64),
        pl.Series("chrf", chrf_values, dtype=pl.Float64),
    )


def _metric_values(group: pl.DataFrame, metric: str) -> tuple[list[float | None], np.ndarray | None]:
    """Per-item scores of one metric for one model, in item order (chrF: its n-gram statistics)."""
    items = group.filter(pl.col("source") == METRIC_SOURCE[metric]).sort("id")
    if metric == "chrf":
        return [], chrf_statistics(
            [r or "" for r in items["reference"].to_list()], [o or "" for o in items["output"].to_list()]
        )
    return items[metric].to_list(), None


def score_samples(
    samples: pl.DataFrame, language: Language, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-sample metrics and one aggregate row per (model, metric), with bootstrap intervals and deltas.

    ``samples`` has columns id, model (base / previous / finetuned), model_version, source (know / ling),
    reference, output. Every model answered the same items, so deltas use a paired bootstrap."""
    scored = score_items(samples, language)
    present = [role for role in MODEL_ROLES if role in set(scored["model"].to_list())]
    present += sorted(set(scored["model"].to_list()) - set(present))
    groups = {model: scored.filter(pl.col("model") == model) for model in present}
    rows = []
    for index, model in enumerate(present):
        group = groups[model]
        version = group["model_version"][0]
        compared_to = present[index - 1] if index > 0 else None
        for metric in METRICS:
            values, stats = _metric_values(group, metric)
            if metric == "chrf":
                n_items, n_skipped = len(stats), 0
                value = chrf_from_statistics(stats) if n_items else None
                ci = chrf_interval(stats, n_resamples, seed)
            else:
                n_items = len(values)
                kept = [v for v in values if v is not None]
                n_skipped = n_items - len(kept)
                value = sum(kept) / len(kept) if kept else None
                ci = mean_interval(values, n_resamples, seed)
            delta = delta_ci = None
            if compared_to is not None:
                other_values, other_stats = _metric_values(groups[compared_to], metric)
                if metric == "chrf":
                    if len(other_stats) == len(stats) and len(stats):
                        delta = value - chrf_from_statistics(other_stats)
                        delta_ci = paired_chrf_delta_interval(other_stats, stats, n_resamples, seed)
                elif len(other_values) == len(values):
                    pairs = [(a, b) for a, b in zip(other_values, values, strict=True) if None not in (a, b)]
                    if pairs:
                        delta = sum(b - a for a, b in pairs) / len(pairs)
                        delta_ci = paired_mean_delta_interval(other_values, values, n_resamples, seed)
            rows.append(
                (
                    language.code, model, version, metric, value, n_items, n_skipped,
                    ci[0] if ci else None, ci[1] if ci else None,
                    compared_to, delta, delta_ci[0] if delta_ci else None, delta_ci[1] if delta_ci else None,
                )
            )  # fmt: skip
    return scored, pl.DataFrame(rows, schema=SCORES_SCHEMA, orient="row")


def regressions(scores: pl.DataFrame) -> pl.DataFrame:
    """Rows where the fine-tuned model is worse than the previous checkpoint beyond the paired interval (the
    whole interval of the delta lies below zero)."""
    if scores.is_empty() or "delta_ci_high" not in scores.columns:
        return scores.head(0)
    return scores.filter(
        (pl.col("model") == "finetuned") & (pl.col("compared_to") == "previous") & (pl.col("delta_ci_high") < 0)
    )


def headline_scores(scores: pl.DataFrame, prefix: str = "") -> dict[str, float]:
    """One language's scores as flat numbers, for plotting across runs: ``<metric>_<model>`` for every model, and
    the fine-tuned model's ``<metric>_delta_vs_base`` (and ``_vs_previous`` when a previous checkpoint was
    scored). A metric without items (no value) is left out rather than shown as 0."""
    values = {(row["model"], row["metric"]): row for row in scores.iter_rows(named=True)}
    flat: dict[str, float] = {}
    for (model, metric), row in values.items():
        if row["value"] is not None:
            flat[f"{prefix}{metric}_{model}"] = float(row["value"])
    for metric in METRICS:
        current, base = values.get(("finetuned", metric)), values.get(("base", metric))
        if current and base and current["value"] is not None and base["value"] is not None:
            flat[f"{prefix}{metric}_delta_vs_base"] = float(current["value"] - base["value"])
        if current and current["compared_to"] == "previous" and current["delta"] is not None:
            flat[f"{prefix}{metric}_delta_vs_previous"] = float(current["delta"])
    return flat


REPORTED = tuple(f"{metric}_{kind}" for metric in METRICS for kind in ("finetuned", "delta_vs_base"))


def report_scores(scores: pl.DataFrame) -> dict[str, float]:
    """The report's numbers: the fine-tuned model's score and its gain over the base model, per language
    (``<code>_<metric>_finetuned``, ``<code>_<metric>_delta_vs_base``) and averaged over the languages that have
    them (``mean_…``)."""
    flat: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    for (code,), rows in sorted(scores.group_by("language"), key=lambda item: item[0]):
        for name, value in headline_scores(rows).items():
            if name in REPORTED:
                flat[f"{code}_{name}"] = value
                by_name.setdefault(name, []).append(value)
    flat.update({f"mean_{name}": sum(values) / len(values) for name, values in sorted(by_name.items())})
    return flat
