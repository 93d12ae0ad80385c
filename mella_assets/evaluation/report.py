"""The cross-language evaluation report: a Markdown table and a bar chart (matplotlib) with values and intervals.

One table row per (language, metric): base, previous checkpoint, current checkpoint, the delta of current against
previous (or base before there is a previous) with its paired bootstrap interval, and current's own interval.
"""

from __future__ import annotations

import base64
import io

import polars as pl

METRICS = ("keyword_accuracy", "meteor", "chrf")
MODELS = ("base", "previous", "finetuned")
COLOURS = {"base": "#969faf", "previous": "#78be96", "finetuned": "#286ec8"}
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


METRIC_LABELS = {
    "keyword_accuracy": ("keyword accuracy", "keyword accuracy (0-1)"),
    "meteor": ("METEOR", "METEOR (0-1)"),
    "chrf": ("chrF", "chrF (0-100)"),
}
MODEL_LABELS = {"base": "base", "previous": "previous", "finetuned": "current"}


def render_score_chart(scores: pl.DataFrame, dpi: int = 80) -> bytes:
    """PNG: one panel per metric, per language a bar for base / previous / current with its value printed on it
    and its 95% bootstrap interval as an error bar; axes labelled with each metric's scale."""
    # The object API with the Agg canvas: no pyplot global state, no display, safe in a worker thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in METRICS if scores.height and m in set(scores["metric"])]
    languages = sorted(set(scores["language"])) if scores.height else []
    models = [m for m in MODELS if scores.height and m in set(scores["model"])]
    figure = Figure(figsize=(max(7.0, 1.3 * len(languages) + 2), 3.2 * max(len(metrics), 1) + 0.8), dpi=dpi)
    FigureCanvasAgg(figure)
    if not metrics:
        figure.text(0.5, 0.5, "no evaluation scores yet", ha="center", va="center")
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0] if metrics else []
    width = 0.8 / max(len(models), 1)
    for ax, metric in zip(axes, metrics, strict=True):
        title, unit = METRIC_LABELS[metric]
        rows = scores.filter(pl.col("metric") == metric)
        top = 100.0 if metric == "chrf" else 1.0
        labels: list[tuple[float, float, str]] = []
        for index, model in enumerate(models):
            by_language = {r["language"]: r for r in rows.filter(pl.col("model") == model).iter_rows(named=True)}
            xs = [i + (index - (len(models) - 1) / 2) * width for i in range(len(languages))]
            cells = [by_language.get(code, {}) for code in languages]
            values = [cell.get("value") for cell in cells]
            heights = [value or 0.0 for value in values]
            # Error bars from each model's own bootstrap interval (none where the interval is missing).
            low = [h - (cell.get("ci_low") or h) for cell, h in zip(cells, heights, strict=True)]
            high = [(cell.get("ci_high") or h) - h for cell, h in zip(cells, heights, strict=True)]
            ax.bar(
                xs,
                heights,
                width,
                label=MODEL_LABELS[model],
                color=COLOURS[model],
                yerr=[low, high],
                capsize=2,
                error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
            )
            for x, value, h, up in zip(xs, values, heights, high, strict=True):
                label = "–" if value is None else (f"{value:.1f}" if top > 1 else f"{value:.3f}")
                labels.append((x, h + up, label))
        # The axis fits the tallest bar with its interval (a 0.04 accuracy would vanish on a 0-1 axis), then each
        # value is printed just above its interval, so the error bar never crosses the number.
        highest = max((y for _, y, _ in labels), default=0.0)
        limit = min(top, highest * 1.3) if highest > 0 else top
        crowded = len(labels) > 12
        for x, y, label in labels:
            ax.text(
                x,
                y + limit * 0.03,
                label,
                ha="center",
                va="bottom",
                fontsize=8 if crowded else 9,
                rotation=90 if crowded else 0,
            )
        ax.set_xticks(range(len(languages)), languages)
        ax.set_ylim(0, limit * (1.35 if crowded else 1.2))
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(f"{title} on each language's test split (error bars: 95% bootstrap interval)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    if metrics:
        axes[-1].set_xlabel("language")
        axes[0].legend(loc="upper right", ncols=len(models), fontsize=8, frameon=False)
    figure.suptitle("MELLA evaluation: base vs previous vs current checkpoint", fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chart_markdown(png: bytes, alt: str = "evaluation chart") -> str:
    """The chart as a Markdown image with a base64 data URI: the Dagster UI renders it inline in the metadata
    (its Markdown sanitiser allows ``data:`` image sources), where a ``file://`` link would not open."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
