"""The cross-language evaluation report: a Markdown table and a bar chart drawn with Pillow.

One table row per (language, metric): base, previous checkpoint, current checkpoint, the delta of current against
previous (or base before there is a previous) with its paired bootstrap interval, and current's own interval.
"""

from __future__ import annotations

import io

import polars as pl
from PIL import Image, ImageDraw

METRICS = ("keyword_accuracy", "meteor", "chrf")
MODELS = ("base", "previous", "finetuned")
COLOURS = {"base": (150, 160, 175), "previous": (120, 190, 150), "finetuned": (40, 110, 200)}
REPORT_COLUMNS = [
    "language",
    "metric",
    "base",
    "previous",
    "current",
    "delta",
    "delta_vs",
    "delta_ci_low",
    "delta_ci_high",
    "ci_low",
    "ci_high",
]


def report_table(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per (language, metric) with the columns of :data:`REPORT_COLUMNS`."""
    if scores.is_empty():
        return pl.DataFrame(schema=dict.fromkeys(REPORT_COLUMNS, pl.String))
    rows = []
    for (language, metric), group in scores.group_by("language", "metric"):
        by_model = {row["model"]: row for row in group.iter_rows(named=True)}
        current = by_model.get("finetuned", {})
        rows.append(
            {
                "language": language,
                "metric": metric,
                "base": by_model.get("base", {}).get("value"),
                "previous": by_model.get("previous", {}).get("value"),
                "current": current.get("value"),
                "delta": current.get("delta"),
                "delta_vs": current.get("compared_to"),
                "delta_ci_low": current.get("delta_ci_low"),
                "delta_ci_high": current.get("delta_ci_high"),
                "ci_low": current.get("ci_low"),
                "ci_high": current.get("ci_high"),
            }
        )
    order = {metric: index for index, metric in enumerate(METRICS)}
    frame = pl.DataFrame(
        rows,
        schema_overrides={c: pl.Float64 for c in REPORT_COLUMNS if c not in ("language", "metric", "delta_vs")},
        infer_schema_length=None,
    )
    return (
        frame.with_columns(pl.col("metric").replace_strict(order, default=len(order)).alias("_order"))
        .sort("language", "_order")
        .drop("_order")
        .select(REPORT_COLUMNS)
    )


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def scores_markdown(scores: pl.DataFrame) -> str:
    """The report table in Markdown: base | previous | current | delta [interval] | current's interval."""
    table = report_table(scores)
    if table.height == 0:
        return "_(no scores yet)_"
    lines = [
        "| language | metric | base | previous | current | delta | delta 95% CI | current 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.iter_rows(named=True):
        delta = _number(row["delta"], signed=True)
        if row["delta_vs"]:
            delta += f" vs {row['delta_vs']}"
        delta_ci = f"[{_number(row['delta_ci_low'], True)}, {_number(row['delta_ci_high'], True)}]"
        ci = f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
        cells = [row["language"], row["metric"], _number(row["base"]), _number(row["previous"])]
        cells += [_number(row["current"]), delta, delta_ci, ci]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_score_chart(scores: pl.DataFrame, width: int = 900, height: int = 420) -> bytes:
    """PNG: per language, base / previous / current bars for keyword accuracy and METEOR (both in [0, 1])."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    table = report_table(scores)
    margin, top, bottom = 50, 40, height - 60
    draw.text((margin, 10), "MELLA evaluation: keyword accuracy (left group) and METEOR (right group)", fill="black")
    draw.line((margin, bottom, width - 20, bottom), fill="black")
    languages = sorted(set(table["language"].to_list())) if table.height else []
    slot = (width - margin - 20) / max(len(languages), 1)
    bar = slot / 8
    for index, language in enumerate(languages):
        x = margin + index * slot + bar / 2
        for metric in ("keyword_accuracy", "meteor"):
            row = table.filter((pl.col("language") == language) & (pl.col("metric") == metric))
            values = row.row(0, named=True) if row.height else {}
            for model, column in zip(MODELS, ("base", "previous", "current"), strict=True):
                value = values.get(column) or 0.0
                y = bottom - (bottom - top) * max(0.0, min(1.0, value))
                draw.rectangle((x, y, x + bar - 2, bottom), fill=COLOURS[model])
                x += bar
            x += bar / 2
        draw.text((margin + index * slot + slot / 3, bottom + 8), language, fill="black")
    for n, model in enumerate(MODELS):
        label = "current" if model == "finetuned" else model
        draw.rectangle((margin + n * 150, height - 25, margin + n * 150 + 12, height - 13), fill=COLOURS[model])
        draw.text((margin + n * 150 + 18, height - 26), label, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
