"""Materialization metadata every asset reports: counts in / out / rejected by reason, a preview, wall time."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
import polars as pl

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 60


def counts_by(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """Row counts per value of ``column``, sorted by value (empty dict for an empty or column-less frame)."""
    if frame.is_empty() or column not in frame.columns:
        return {}
    counts = frame.group_by(column).len().sort(column)
    return {str(k): int(v) for k, v in zip(counts[column], counts["len"], strict=True)}


def preview_markdown(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows as a Markdown table, long cells shortened, nested values shown as text."""
    if frame.is_empty():
        return "_(no rows)_"
    head = frame.head(rows)
    columns = head.columns

    def cell(value: Any) -> str:
        text = str(value) if value is not None else ""
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


class StageTimer:
    """Wall time of an asset body, started when the asset starts."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def table_metadata(
    *,
    timer: StageTimer,
    rows_in: int,
    output: pl.DataFrame,
    rejects: pl.DataFrame | None = None,
    unit: str = "rows",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The standard metadata of one materialization."""
    seconds = timer.seconds
    metadata: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": output.height,
        "rows_rejected": 0 if rejects is None else rejects.height,
        "rejected_by_reason": dg.MetadataValue.json(counts_by(rejects, "reason") if rejects is not None else {}),
        "wall_seconds": round(seconds, 3),
        f"{unit}_per_second": round(rows_in / seconds, 1) if seconds > 0 else None,
        "preview": dg.MetadataValue.md(preview_markdown(output)),
    }
    if extra:
        metadata.update(extra)
    return metadata
