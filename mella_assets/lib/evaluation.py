"""Score model outputs on the test split: keyword accuracy on `know` items, METEOR and chrF on `ling` items."""

from __future__ import annotations

import polars as pl

from mella_assets.languages import Language
from mella_assets.lib.metrics import chrf, corpus_keyword_accuracy, corpus_meteor, keyword_accuracy, meteor

SCORES_SCHEMA = {
    "language": pl.String,
    "model": pl.String,
    "model_version": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "n_items": pl.Int64,
    "n_skipped": pl.Int64,
}


def score_samples(samples: pl.DataFrame, language: Language) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-sample metrics and aggregates per model.

    ``samples`` has columns model, model_version, source, reference, output. Returns the samples with
    ``keyword_accuracy`` (know) and ``meteor`` (ling) added, and one aggregate row per (model, metric).
    """
    per_sample_keyword, per_sample_meteor = [], []
    for source, reference, output in samples.select("source", "reference", "output").iter_rows():
        is_know = source == "know"
        per_sample_keyword.append(keyword_accuracy(reference, output, language) if is_know else None)
        per_sample_meteor.append(None if is_know else meteor(reference, output, language))
    scored = samples.with_columns(
        pl.Series("keyword_accuracy", per_sample_keyword, dtype=pl.Float64),
        pl.Series("meteor", per_sample_meteor, dtype=pl.Float64),
    )
    rows = []
    for (model, version), group in scored.group_by("model", "model_version", maintain_order=True):
        know = group.filter(pl.col("source") == "know")
        ling = group.filter(pl.col("source") == "ling")
        keyword = corpus_keyword_accuracy(know["reference"].to_list(), know["output"].to_list(), language)
        rows.append(
            (
                language.code,
                model,
                version,
                "keyword_accuracy",
                keyword.value,
                keyword.n_items,
                keyword.n_skipped,
            )
        )
        met = corpus_meteor(ling["reference"].to_list(), ling["output"].to_list(), language)
        rows.append((language.code, model, version, "meteor", met.value, met.n_items, met.n_skipped))
        chrf_value = chrf(ling["reference"].to_list(), ling["output"].to_list()) if ling.height else None
        rows.append((language.code, model, version, "chrf", chrf_value, ling.height, 0))
    return scored, pl.DataFrame(rows, schema=SCORES_SCHEMA, orient="row")
