"""Row counts and a content hash per table and partition of a lake: proves a restructure keeps behaviour.

    python -m benchmarks.table_hashes LAKE [--exclude table.column ...] > hashes.tsv

The hash is order-independent (sha256 over the sorted per-row hashes), so two runs that write the same rows in
another order hash the same. Columns that hold wall-clock times or run ids differ between any two runs: name them
with ``--exclude`` (the default list below) to compare contents.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import polars as pl

# Columns that differ between two runs of the same code: times, durations and ids made from them.
DEFAULT_EXCLUDE = (
    "*.registered_at",
    "*.fetched_at",
    "*.created_at",
    "*.extracted_at",
    "*.trained_at",
    "*.evaluated_at",
)


def _excluded(table: str, column: str, patterns: list[str]) -> bool:
    return any(p in {f"{table}.{column}", f"*.{column}", f"{table}.*"} for p in patterns)


def table_hashes(lake: Path, exclude: list[str]) -> list[tuple[str, str, int, str]]:
    rows = []
    # A sharded table's files (language=cs/shard=00/…) hash together as their language: a table sharded by a
    # restructure compares equal to the same rows in one file.
    partitions: dict[tuple[str, str], list[Path]] = {}
    for file in sorted((lake / "tables").rglob("data.parquet")):
        parts = file.relative_to(lake / "tables").parts
        partitions.setdefault((parts[0], parts[1] if len(parts) > 2 else "-"), []).append(file)
    for (table, partition), files in partitions.items():
        frame = pl.concat([pl.read_parquet(file) for file in files], how="vertical_relaxed")
        frame = frame.select([c for c in frame.columns if not _excluded(table, c, exclude)])
        digest = hashlib.sha256()
        digest.update(",".join(f"{c}:{t}" for c, t in frame.schema.items()).encode())
        # repr of each row as Python values: exact for nested columns too; the demo's tables are small.
        for value in sorted(repr(row) for row in frame.iter_rows()):
            digest.update(value.encode())
            digest.update(b"\x1e")
        rows.append((table, partition, frame.height, digest.hexdigest()[:16]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake", type=Path)
    parser.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDE))
    args = parser.parse_args(argv)
    for table, partition, count, digest in table_hashes(args.lake, args.exclude):
        sys.stdout.write(f"{table}\t{partition}\t{count}\t{digest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
