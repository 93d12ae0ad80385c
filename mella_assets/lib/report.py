"""The cross-language evaluation report: a Markdown table and a bar chart drawn with Pillow."""

from __future__ import annotations

import io

import polars as pl
from PIL import Image, ImageDraw

METRICS = ("keyword_accuracy", "meteor", "chrf")
MODELS = ("base", "finetuned")
COLOURS = {"base": (150, 160, 175), "finetuned": (40, 110, 200)}


def score_table(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per language, one column per (metric, model), e.g. ``meteor_finetuned``."""
    if scores.is_empty():
        return pl.DataFrame({"language": []}, schema={"language": pl.String})
    wide = scores.with_columns((pl.col("metric") + "_" + pl.col("model")).alias("column")).pivot(
        on="column", index="language", values="value"
    )
    ordered = [f"{m}_{model}" for m in METRICS for model in MODELS if f"{m}_{model}" in wide.columns]
    return wide.select("language", *ordered).sort("language")


def scores_markdown(scores: pl.DataFrame) -> str:
    table = score_table(scores)
    if table.height == 0:
        return "_(no scores yet)_"
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    for row in table.iter_rows():
        cells = [row[0]] + ["–" if v is None else f"{v:.3f}" for v in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_score_chart(scores: pl.DataFrame, width: int = 900, height: int = 420) -> bytes:
    """PNG: per language, base vs fine-tuned bars for keyword accuracy and METEOR (both in [0, 1])."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    table = score_table(scores)
    margin, top, bottom = 50, 40, height - 60
    draw.text((margin, 10), "MELLA evaluation: keyword accuracy (left pair) and METEOR (right pair)", fill="black")
    draw.line((margin, bottom, width - 20, bottom), fill="black")
    languages = table["language"].to_list() if table.height else []
    slot = (width - margin - 20) / max(len(languages), 1)
    bar = slot / 6
    for index, language in enumerate(languages):
        row = table.row(index, named=True)
        x = margin + index * slot + bar / 2
        for metric in ("keyword_accuracy", "meteor"):
            for model in MODELS:
                value = row.get(f"{metric}_{model}") or 0.0
                y = bottom - (bottom - top) * max(0.0, min(1.0, value))
                draw.rectangle((x, y, x + bar - 2, bottom), fill=COLOURS[model])
                x += bar
            x += bar / 2
        draw.text((margin + index * slot + slot / 3, bottom + 8), language, fill="black")
    for n, model in enumerate(MODELS):
        draw.rectangle((margin + n * 150, height - 25, margin + n * 150 + 12, height - 13), fill=COLOURS[model])
        draw.text((margin + n * 150 + 18, height - 26), model, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
