"""One language partition launched through the Dagster instance, as the UI, a backfill or a sensor launches it, vs
the same run executed in the demo's process.

``ours``: a ``language_pipeline_job`` run for one partition (its sources and shard runs done beforehand, in the
prepared lake, as `language_phases_sensor` launches it) created for the demo code location's job, submitted to
the instance (the local ``dagster.yaml`` `mella demo` writes: run queue, pools), dequeued by the queue daemon's own
iteration (what `make ui`'s daemon does) and launched by the default run launcher through the code server: a new
process imports the code location, loads the models and the detectors and executes every step with the executor
of ``MELLA_EXECUTOR`` (default ``in_process``). Timed from submission to the run's end; the code server is up
already, as under `make ui`. ``baseline``: the same run executed by `mella demo`'s function in a process that has
imported the code location, as the demo's first language is (models and detectors load inside the run in both).
Each run starts from a fresh copy of the same prepared lake (the 1x demo corpus and the tiny models), so no run
finds another's captions, translations or images in the cache. The notes carry every run's seconds and the warm
figure of a second in-process run (the demo's later languages).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Measurement, Row, compare

LANGUAGE = "cs"
JOB = "language_pipeline_job"
TARGET_RATIO = 1.5  # launched seconds / in-process seconds


def restore(template: Path, lake: Path) -> None:
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(template, lake)


def shards_worker(template: Path, port: int) -> None:
    """(The subprocess side.) The partition's sources and shard runs, in place in the template lake: both sides
    then time the language run alone — the run `language_phases_sensor` launches once a language's shards are
    done (the language's per-page stages are language × shard runs of their own since the fan-out)."""
    from mella_assets.demo.run import QUIET_RUN_CONFIG, configure_demo_environment, quiet_libraries

    home = Path(tempfile.mkdtemp(prefix="mella-ui-shards-"))
    try:
        configure_demo_environment(str(template), str(home), port)
        quiet_libraries()
        import dagster as dg

        from mella_assets.definitions import language_pipeline_assets, materialize_language
        from mella_assets.demo.resources import demo_resources

        before_language_run = {"crawl_sources", "raw_crawl", "alt_text_pairs", "images"}
        assets = [a for a in language_pipeline_assets() if a.node_def.name in before_language_run]
        result = materialize_language(
            LANGUAGE,
            assets,
            resources=demo_resources(str(template), port),
            instance=dg.DagsterInstance.ephemeral(),
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        if not result.success:
            raise RuntimeError(f"the {LANGUAGE} sources and shard runs failed")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _shards(template: Path, port: int) -> None:
    code = (
        "import sys; from pathlib import Path; from benchmarks.bench_ui_runs import shards_worker; "
        "shards_worker(Path(sys.argv[1]), int(sys.argv[2]))"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(template), str(port)], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"shard runs failed:\n{completed.stderr[-4000:]}")


def in_process_worker(template: Path, lake: Path, home: Path, port: int, runs: int) -> list[float]:
    """(The subprocess side.) ``runs`` runs of the partition executed in this process, each on a fresh lake."""
    from mella_assets.demo.run import (
        configure_demo_environment,
        create_location_run,
        demo_code_location,
        execute_location_run,
        quiet_libraries,
    )

    configure_demo_environment(str(lake), str(home), port)
    quiet_libraries()
    import dagster as dg

    instance = dg.DagsterInstance.get()
    seconds = []
    restore(template, lake)  # the code location loads the demo's resources only for a demo lake
    with demo_code_location(instance) as location:
        for _ in range(runs):
            restore(template, lake)
            started = time.perf_counter()
            run = create_location_run(instance, location, JOB, LANGUAGE, tags={"mella/trigger": "benchmark"})
            if not execute_location_run(instance, run, log=lambda line: None):
                raise RuntimeError(f"in-process run {run.run_id} failed")
            seconds.append(time.perf_counter() - started)
    return seconds


def _in_process(template: Path, lake: Path, home: Path, port: int, runs: int) -> list[float]:
    """:func:`in_process_worker` in a fresh process (so its first run is cold, as the demo's first language)."""
    code = (
        "import json, sys; from pathlib import Path; from benchmarks.bench_ui_runs import in_process_worker; "
        "print(json.dumps(in_process_worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "
        "int(sys.argv[4]), int(sys.argv[5]))))"
    )
    command = [sys.executable, "-c", code, str(template), str(lake), str(home), str(port), str(runs)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"in-process worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def launched_seconds(workspace, template: Path, lake: Path, timeout_s: float = 1800.0) -> float:
    """Submits one run to the instance, dequeues it as the daemon does, waits for its end; seconds taken."""
    import dagster as dg
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    from mella_assets.demo.run import DEMO_LOCATION_NAME, create_location_run

    instance = workspace.instance
    restore(template, lake)
    context = workspace.create_request_context()
    location = context.get_code_location(DEMO_LOCATION_NAME)
    started = time.perf_counter()
    run = create_location_run(instance, location, JOB, LANGUAGE, tags={"mella/trigger": "benchmark"})
    instance.submit_run(run.run_id, context)
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    while time.perf_counter() - started < timeout_s:
        current = instance.get_run_by_id(run.run_id)
        if current.status == dg.DagsterRunStatus.QUEUED:
            list(daemon.run_iteration(workspace))
        elif current.is_finished:
            if current.status != dg.DagsterRunStatus.SUCCESS:
                raise RuntimeError(f"launched run {run.run_id} ended {current.status}")
            return time.perf_counter() - started
        time.sleep(0.25)
    raise RuntimeError(f"launched run {run.run_id} did not finish in {timeout_s} s")


def _launched(template: Path, lake: Path, home: Path, port: int, runs: int, executor: str | None = None) -> list[float]:
    from mella_assets.demo.run import DEMO_CODE_LOCATION, DEMO_LOCATION_NAME, configure_demo_environment

    saved = dict(os.environ)
    try:
        configure_demo_environment(str(lake), str(home), port)  # the code server reads these
        if executor:
            os.environ["MELLA_EXECUTOR"] = executor
        import dagster as dg
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import ModuleTarget

        target = ModuleTarget(
            module_name=DEMO_CODE_LOCATION,
            attribute=None,
            working_directory=os.getcwd(),
            location_name=DEMO_LOCATION_NAME,  # as `mella ui` names it
        )
        restore(template, lake)  # the code location loads the demo's resources only for a demo lake
        with dg.DagsterInstance.get() as instance, WorkspaceProcessContext(instance, target) as workspace:
            return [launched_seconds(workspace, template, lake) for _ in range(runs)]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(quick: bool = False) -> list[Row]:
    from benchmarks.bench_end_to_end import prepare

    runs = 2
    with tempfile.TemporaryDirectory(prefix="mella-ui-runs-") as tmp:
        template, lake = Path(tmp) / "template", Path(tmp) / "lake"
        prepare(template, copies=1)
        port = int((template / "bench_port").read_text())
        _shards(template, port)
        home = Path(tmp) / "dagster_home"
        # Interleaved, so load on a shared machine hits both alike; each in-process worker: a cold run, a warm one.
        launched, cold, warm = [], [], []
        for _ in range(runs):
            first, second = _in_process(template, lake, home, port, runs=2)
            cold.append(first)
            warm.append(second)
            launched.extend(_launched(template, lake, home, port, runs=1))
        # Before: Dagster's process per step (MELLA_EXECUTOR=multiprocess), one run for the notes.
        per_step = [] if quick else _launched(template, lake, home, port, runs=1, executor="multiprocess")
    ratio = statistics.median(launched) / statistics.median(cold)
    return [
        compare(
            f"one {LANGUAGE} partition launched through the instance (as the UI)",
            "partition runs/min",
            Measurement(items=1, rates=[60 / s for s in launched]),
            Measurement(items=1, rates=[60 / s for s in cold]),
            "the same run in the demo's process (first language: cold models)",
            launched_seconds=[round(s, 1) for s in launched],
            in_process_seconds=[round(s, 1) for s in cold],
            in_process_warm_seconds=[round(s, 1) for s in warm],
            launched_multiprocess_seconds=[round(s, 1) for s in per_step],
            time_ratio=round(ratio, 2),
            target_time_ratio=TARGET_RATIO,
            executor=os.environ.get("MELLA_EXECUTOR", "in_process"),
        )
    ]
