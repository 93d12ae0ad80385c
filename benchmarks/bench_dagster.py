"""Dagster overhead per language partition: the same asset code run by Dagster and called directly.

``ours``: ``dg.materialize`` of the language pipeline's assets (crawl_sources → mella_dataset) for one partition,
in-process, with the real resources, on a SQLite Dagster instance (run storage, event log, partition bookkeeping
as in ``mella demo``). ``baseline``: the same asset functions called in the same order with
``dg.build_asset_context`` and the same resources: the same lib calls, lake reads and writes, with no run, no
plan, no event log. The input is the 1x demo corpus of one language, run once before timing so every model,
detector and cache is warm: what remains is the partition's own small work plus, in ``ours``, Dagster's.
Asset checks are not run in either. The overhead (median seconds per partition run) is in the row's notes.
"""

from __future__ import annotations

import inspect
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Measurement, Row, compare

LANGUAGE = "cs"


def _config_kwargs(asset_def) -> dict:
    """``config=<its Config class with defaults>`` for an asset whose function takes one."""
    function = asset_def.op.compute_fn.decorated_fn
    parameter = inspect.signature(function).parameters.get("config")
    return {"config": parameter.annotation()} if parameter is not None else {}


def run(quick: bool = False) -> list[Row]:
    from benchmarks.bench_end_to_end import prepare

    runs = 5
    with tempfile.TemporaryDirectory(prefix="mella-dagster-") as tmp:
        lake_root = Path(tmp) / "lake"
        prepare(lake_root, copies=1)
        port = int((lake_root / "bench_port").read_text())
        saved = dict(os.environ)
        try:
            seconds_dagster, seconds_direct = _measure(lake_root, Path(tmp) / "dagster_home", port, runs)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    overhead = statistics.median(seconds_dagster) - statistics.median(seconds_direct)
    return [
        compare(
            f"Dagster overhead, one {LANGUAGE} partition (warm)",
            "partition runs/s",
            Measurement(items=1, rates=[1 / s for s in seconds_dagster]),
            Measurement(items=1, rates=[1 / s for s in seconds_direct]),
            "same asset functions called directly",
            overhead_seconds_median=round(overhead, 3),
            dagster_seconds=[round(s, 3) for s in seconds_dagster],
            direct_seconds=[round(s, 3) for s in seconds_direct],
            target_overhead_seconds=3.0,
        )
    ]


def _measure(lake_root: Path, dagster_home: Path, port: int, runs: int) -> tuple[list[float], list[float]]:
    from mella_assets.demo.run import QUIET_RUN_CONFIG, configure_demo_environment, quiet_libraries

    configure_demo_environment(str(lake_root), str(dagster_home), port)
    quiet_libraries()
    import dagster as dg

    from mella_assets.definitions import language_pipeline_assets
    from mella_assets.demo.resources import demo_resources

    resources = demo_resources(str(lake_root), port)
    instance = dg.DagsterInstance.get()

    def through_dagster() -> float:
        started = time.perf_counter()
        result = dg.materialize(
            language_pipeline_assets(),
            partition_key=LANGUAGE,
            resources=resources,
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
        )
        assert result.success
        return time.perf_counter() - started

    def direct() -> float:
        started = time.perf_counter()
        with dg.build_asset_context(partition_key=LANGUAGE, resources=resources) as context:
            for asset_def in language_pipeline_assets():
                asset_def(context, **_config_kwargs(asset_def))
        return time.perf_counter() - started

    through_dagster()  # cold: models, detectors, caches
    direct()
    dagster_seconds, direct_seconds = [], []
    for _ in range(runs):  # interleaved, so load on a shared machine hits both alike
        dagster_seconds.append(through_dagster())
        direct_seconds.append(direct())
    return dagster_seconds, direct_seconds
