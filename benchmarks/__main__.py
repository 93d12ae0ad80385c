"""Run every benchmarks/bench_*.py and write benchmarks/results/latest.{json,md}.

python -m benchmarks [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from importlib import metadata
from pathlib import Path

import benchmarks
from benchmarks.harness import machine

RESULTS = Path(__file__).resolve().parent / "results"
VERSIONS = ["polars", "duckdb", "dagster", "torch", "transformers", "lingua-language-detector", "selectolax", "warcio"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    parser.add_argument("--only", help="run only benchmarks whose module name contains this")
    args = parser.parse_args()
    rows = []
    for module in sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")):
        if args.only and args.only not in module:
            continue
        print(f"== {module}", flush=True)
        for row in importlib.import_module(f"benchmarks.{module}").run(quick=args.quick):
            print(f"   {row.stage}: {row.ours:,.1f} vs {row.baseline:,.1f} {row.unit} ({row.ratio:.1f}x)", flush=True)
            rows.append(row)
    info = {**machine(), "versions": {name: _version(name) for name in VERSIONS}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps({"machine": info, "rows": [row.to_json() for row in rows]}, indent=2, ensure_ascii=False)
    )
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}.",
        "",
        "| stage | unit | ours (median, min–max) | baseline | baseline (median, min–max) | ratio | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.stage} | {row.unit} | {row.ours:,.1f} ({row.ours_range[0]:,.1f}–{row.ours_range[1]:,.1f}) "
            f"| {row.baseline_name} | {row.baseline:,.1f} ({row.baseline_range[0]:,.1f}–{row.baseline_range[1]:,.1f}) "
            f"| {row.ratio:.1f}× | {row.runs} |"
        )
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'latest.md'}")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
