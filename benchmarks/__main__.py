"""Run every benchmarks/bench_*.py and write benchmarks/results/latest.{json,md}.

python -m benchmarks [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import time
from importlib import metadata
from pathlib import Path

import benchmarks
from benchmarks.harness import machine

RESULTS = Path(__file__).resolve().parent / "results"
VERSIONS = [
    "polars",
    "duckdb",
    "numpy",
    "pillow",
    "dagster",
    "torch",
    "transformers",
    "lingua-language-detector",
    "selectolax",
    "warcio",
    "fastwarc",
    "pycld2",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    parser.add_argument("--only", help="run only benchmarks whose module name contains this")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub lookups: every model here is local
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    started, load_before = time.perf_counter(), _load_average()
    rows, seconds = [], {}
    for module in sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")):
        if args.only and args.only not in module:
            continue
        print(f"== {module}", flush=True)
        module_started = time.perf_counter()
        for row in importlib.import_module(f"benchmarks.{module}").run(quick=args.quick):
            print(f"   {row.stage}: {row.ours:,.2f} vs {row.baseline:,.2f} {row.unit} ({row.ratio:.2f}x)", flush=True)
            rows.append(row)
        seconds[module] = round(time.perf_counter() - module_started, 1)
        print(f"   ({seconds[module]:.0f} s)", flush=True)
    info = {
        **machine(),
        "versions": {name: _version(name) for name in VERSIONS},
        "quick": args.quick,
        "total_seconds": round(time.perf_counter() - started, 1),
        "seconds_per_module": seconds,
        # The 1/5/15-minute load averages before and after: on a shared machine, the context of every figure.
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps({"machine": info, "rows": [row.to_json() for row in rows]}, indent=2, ensure_ascii=False)
    )
    (RESULTS / "latest.md").write_text(render_markdown(info, rows))
    print(f"wrote {RESULTS / 'latest.md'} in {info['total_seconds']:.0f} s")


def render_markdown(info: dict, rows: list) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items() if version)
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; {versions}.",
        f"Run: {'quick' if info['quick'] else 'full'}, {info['total_seconds']:.0f} s in all; load average "
        f"{_format_load(info['load_average_before'])} before, {_format_load(info['load_average_after'])} after.",
        "",
        "| stage | unit | ours (median, min–max) | baseline | baseline (median, min–max) | ratio | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.stage} | {row.unit} | {_number(row.ours)} ({_number(row.ours_range[0])}–"
            f"{_number(row.ours_range[1])}) | {row.baseline_name} | {_number(row.baseline)} "
            f"({_number(row.baseline_range[0])}–{_number(row.baseline_range[1])}) | {row.ratio:.2f}× | {row.runs} |"
        )
    lines += ["", "## Notes per row", ""]
    for row in rows:
        notes = ", ".join(f"{key} {_note(value)}" for key, value in row.notes.items())
        lines.append(f"- **{row.stage}**: {notes}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.3g}"


def _note(value: object) -> str:
    """A note as the Markdown shows it: ranges as low–high, anything long only in latest.json."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return f"{value[0]}–{value[1]}"
    text = str(value)
    return text if len(text) <= 100 and not isinstance(value, dict) else "(in latest.json)"


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _format_load(load: list[float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{value:.1f}" for value in load)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
