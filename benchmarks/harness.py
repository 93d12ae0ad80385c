"""Timing and reporting shared by the benchmark modules.

A benchmark module is ``benchmarks/bench_<stage>.py`` with ``run(quick: bool) -> list[Row]``; `python -m
benchmarks` runs them all and writes ``benchmarks/results/latest.{json,md}``. Every row compares our throughput
with a baseline measured in the same process, as medians of repeated runs with their min–max.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Measurement:
    """Throughputs (items per second) of repeated runs."""

    items: int
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)


def measure(fn: Callable[[], int], runs: int = 5, warmup: int = 1) -> Measurement:
    """Call ``fn`` (which returns how many items it processed) ``warmup + runs`` times; rates of the timed runs."""
    for _ in range(warmup):
        fn()
    rates, items = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        items = fn()
        rates.append(items / max(time.perf_counter() - started, 1e-9))
    return Measurement(items=items, rates=rates)


@dataclass
class Row:
    """One line of the report: our throughput, the baseline's, and their ratio."""

    stage: str
    unit: str
    ours: float
    baseline: float
    runs: int
    ours_range: tuple[float, float]
    baseline_range: tuple[float, float]
    baseline_name: str
    notes: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    def to_json(self) -> dict:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 3)
        return data


def compare(stage: str, unit: str, ours: Measurement, baseline: Measurement, baseline_name: str, **notes) -> Row:
    return Row(
        stage=stage,
        unit=unit,
        ours=round(ours.median, 2),
        baseline=round(baseline.median, 2),
        runs=len(ours.rates),
        ours_range=(round(ours.low, 2), round(ours.high, 2)),
        baseline_range=(round(baseline.low, 2), round(baseline.high, 2)),
        baseline_name=baseline_name,
        notes=notes,
    )


def machine() -> dict:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
