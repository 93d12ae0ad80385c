"""End-to-end cost of one language partition as the corpus grows: the demo corpus at 1x, 4x and 16x.

Each run materializes ``language_pipeline_job`` (crawl files → raw_crawl → alt texts → image fetch and
validation → D_know → captions → translations → D_ling → mella_dataset, with the tiny random models) for one
language on a fresh copy of the lake (no cache from an earlier run: every page is extracted, every image fetched
and validated, every caption and translation generated). Each scale runs in its own subprocess: one cold run
(imports, model and language-detector loading; reported in the notes), then five timed runs, each on a fresh
copy of the lake with the same resources (loaded models stay loaded, as in a long-lived code server); the
process's peak RSS is reported. Training and evaluation are not included:
their cost is set by the number of steps and test items, not by the corpus. The corpus, its loopback image site
and the tiny models are built once per scale before timing.

Throughput is pages of the corpus per second of the job's wall time; the baseline of every row is the 1x run,
so the ratio says how much cheaper per page a bigger partition is. Wall seconds, peak RSS and the growth
exponent ``log(t16 / t4) / log(4)`` (1.0 = linear; the target is ≤ 1) are in the notes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Measurement, Row, compare

LANGUAGE = "cs"
SCALES = (1, 4, 16)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(lake_root: Path, copies: int, language: str = LANGUAGE) -> dict[str, int]:
    """The demo corpus of ``language`` at ``copies`` x and the tiny models in a new lake; its size."""
    from mella_assets.demo.corpus import build_demo_corpus, demo_texts
    from mella_assets.demo.tiny_models import build_tiny_models

    # The site's base URL is rewritten by nothing: the worker serves the site on the port baked in here.
    port = _free_port()
    site = build_demo_corpus(lake_root, f"http://127.0.0.1:{port}", [language], copies=copies)
    build_tiny_models(lake_root / "models" / "tiny", demo_texts([language]))
    (lake_root / "bench_port").write_text(str(port))
    return {"pages": len(site.pages[language]), "images": len(site.images[language])}


def worker(template: Path, language: str, runs: int) -> dict:
    """(The subprocess side.) Materialize ``language`` ``1 + runs`` times, each on a fresh copy of the prepared
    lake ``template`` with an ephemeral Dagster instance: a cold first run (imports, model and detector loading)
    and ``runs`` timed ones; seconds of each and the process's peak RSS."""
    from mella_assets.demo.run import QUIET_RUN_CONFIG, configure_demo_environment, quiet_libraries

    port = int((template / "bench_port").read_text())
    workspace = Path(tempfile.mkdtemp(prefix="mella-e2e-runs-"))
    try:
        configure_demo_environment(str(template), str(workspace / "dagster_home"), port)
        quiet_libraries()
        import dagster as dg

        from mella_assets.definitions import language_pipeline_assets, materialize_language
        from mella_assets.demo.resources import demo_resources

        # One lake path and one set of resources for every run (loaded models and detectors stay, as in a
        # long-lived code server); the lake itself is restored from the template before each run.
        lake = workspace / "lake"
        resources = demo_resources(str(lake), port)
        assets = language_pipeline_assets()
        seconds = []
        for _ in range(1 + runs):
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(template, lake)
            started = time.perf_counter()
            # The language's phases as its jobs run them: sources, each of its shards, the language run.
            result = materialize_language(
                language,
                assets,
                resources=resources,
                instance=dg.DagsterInstance.ephemeral(),
                run_config=QUIET_RUN_CONFIG,
                raise_on_error=False,
            )
            seconds.append(time.perf_counter() - started)
            if not result.success:
                raise RuntimeError(f"the {language} pipeline failed")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return {"cold_seconds": seconds[0], "seconds": seconds[1:], "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across exec, so a child of a
    big parent reports the parent's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_scale(template: Path, runs: int, language: str = LANGUAGE) -> dict:
    """``worker`` in a fresh subprocess (so peak RSS is this scale's alone)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    # One torch thread per process, as in bench_generation: the figures compare scales, not thread counts.
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "benchmarks.bench_end_to_end", "--worker", str(template)]
    completed = subprocess.run(
        [*command, "--language", language, "--runs", str(runs)], capture_output=True, text=True, env=env, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"end-to-end worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def growth_exponent(seconds_low: float, seconds_high: float, factor: float) -> float:
    """``k`` in ``t ∝ size^k`` between two sizes ``factor`` apart (1.0: linear)."""
    return math.log(seconds_high / seconds_low) / math.log(factor)


def run(quick: bool = False) -> list[Row]:
    # Quick: two timed runs per scale (a smoke run of the whole path); full: medians of five.
    runs = 2 if quick else 5
    scales = SCALES
    results: dict[int, dict] = {}
    sizes: dict[int, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="mella-e2e-template-") as tmp:
        for copies in scales:
            template = Path(tmp) / f"x{copies}"
            sizes[copies] = prepare(template, copies)
            results[copies] = run_scale(template, runs)
    rows = []
    # Throughput is corpus pages per second of partition wall time, so the shared harness's median/min–max
    # apply and the ratio to 1x reads as "how much cheaper per page at scale"; the notes carry the wall seconds,
    # the peak RSS and the growth exponent.
    base_pages = sizes[scales[0]]["pages"]
    baseline = Measurement(items=base_pages, rates=[base_pages / s for s in results[scales[0]]["seconds"]])
    for copies in scales:
        seconds = results[copies]["seconds"]
        pages = sizes[copies]["pages"]
        notes = {
            "copies": copies,
            **sizes[copies],
            "wall_seconds_median": round(statistics.median(seconds), 2),
            "wall_seconds_range": (round(min(seconds), 2), round(max(seconds), 2)),
            "cold_first_run_seconds": round(results[copies]["cold_seconds"], 2),
            "peak_rss_mb": round(results[copies]["peak_rss_mb"], 1),
            "language": LANGUAGE,
            "includes": "language_pipeline_job (crawl → mella_dataset, with its checks); no training or evaluation",
        }
        if copies != scales[0]:
            previous = scales[scales.index(copies) - 1]
            notes[f"growth_exponent_{previous}x_to_{copies}x"] = round(
                growth_exponent(
                    statistics.median(results[previous]["seconds"]), statistics.median(seconds), copies / previous
                ),
                3,
            )
        rows.append(
            compare(
                f"end-to-end {LANGUAGE} partition {copies}x demo corpus",
                "pages/s",
                Measurement(items=pages, rates=[pages / s for s in seconds]),
                baseline,
                f"{scales[0]}x demo corpus",
                **notes,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", type=Path, help="(internal) materialize the partition of this prepared lake")
    parser.add_argument("--language", default=LANGUAGE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prepare", type=Path, help="build a lake with the corpus at --copies x, then time it")
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.language, args.runs)))
    elif args.prepare:
        print(json.dumps(prepare(args.prepare, args.copies, args.language)))
        print(json.dumps(run_scale(args.prepare, args.runs, args.language)))


if __name__ == "__main__":
    main()
