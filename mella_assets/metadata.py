"""Materialization metadata every asset reports: counts in / out / rejected by reason, a preview, wall time."""

from __future__ import annotations

import time
from collections.abc import Mapping
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


# What a reader looks at first in a preview (in this order), and the machine columns that go last.
HUMAN_COLUMNS = (
    "reason",
    "language",
    "alt_text",
    "text",
    "caption_en",
    "reference",
    "output",
    "prompt",
    "keywords",
    "image_url",
    "page_url",
    "url",
    "uri",
    "domain",
    "source",
    "split",
)
MACHINE_MARKERS = ("sha256", "hash", "phash", "_key", "_id", "offset", "version", "checkpoint")


def is_machine_column(name: str) -> bool:
    return name in {"id", "key"} or any(marker in name for marker in MACHINE_MARKERS)


def preview_columns(columns: list[str]) -> list[str]:
    """``columns`` reordered for a reader: :data:`HUMAN_COLUMNS` first, hashes, ids and keys last, the rest in
    between in table order."""
    human = [c for c in HUMAN_COLUMNS if c in columns]
    machine = [c for c in columns if c not in human and is_machine_column(c)]
    return human + [c for c in columns if c not in human and c not in machine] + machine


def _preview_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    return "bool" if dtype == pl.Boolean else "string"


def _preview_cell(value: Any, kind: str) -> str | int | float | bool | None:
    if value is None or kind != "string":
        return value
    text = str(value).replace("\n", " ")
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def preview_table(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The first rows as table metadata (a table in the UI, not Markdown behind a click), human columns first;
    long cells shortened, nested values shown as text."""
    columns = preview_columns(frame.columns)
    kinds = {c: _preview_type(frame.schema[c]) for c in columns}
    records = [
        dg.TableRecord({c: _preview_cell(row[c], kinds[c]) for c in columns})
        for row in frame.head(rows).iter_rows(named=True)
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, kinds[c]) for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


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
    dropped: Mapping[str, int] | None = None,
    derived: bool = False,
    unit: str = "rows",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The standard metadata of one materialization.

    For a stage that filters, every input row is accounted for: ``rows_in = rows_out + rows_rejected``, where the
    rejected are the ``rejects`` rows (by their ``reason``) plus ``dropped``, counts by reason of rows dropped
    without a rejects table (duplicates merged away, pairs whose image was not stored…). A ``derived`` output
    (scores of test items, files of an export) is not a subset of its input: it reports ``rows_in`` and
    ``rows_out`` only."""
    seconds = timer.seconds
    metadata: dict[str, Any] = {"rows_in": rows_in, "rows_out": output.height}
    if not derived:
        by_reason = counts_by(rejects, "reason") if rejects is not None else {}
        for reason, count in (dropped or {}).items():
            if count:
                by_reason[reason] = by_reason.get(reason, 0) + int(count)
        metadata["rows_rejected"] = sum(by_reason.values())
        metadata["rejected_by_reason"] = dg.MetadataValue.json(dict(sorted(by_reason.items())))
    metadata["wall_seconds"] = round(seconds, 3)
    metadata[f"{unit}_per_second"] = round(rows_in / seconds, 1) if seconds > 0 else None
    metadata["preview"] = preview_table(output)
    if extra:
        metadata.update(extra)
    return metadata
