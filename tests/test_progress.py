"""Progress of the long loops: a line ``<stage>: done/total unit (pct), rate/s, ETA`` at most every interval, plus a
first and a last line, so the run log of even a short demo partition shows the image downloads, captions and
translations advancing."""

from __future__ import annotations

import re

import dagster as dg
import pytest
from conftest import free_port

from mella_assets.definitions import build_definitions
from mella_assets.demo.cc_crawl import DEMO_CRAWL
from mella_assets.demo.resources import demo_resources
from mella_assets.demo.run import LANGUAGE_JOBS, materialize_everything, prepare_demo_inputs
from mella_assets.lib.progress import Progress


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_first_every_interval_and_last_with_rate_and_eta():
    log, clock = Lines(), Clock()
    progress = Progress("mllm_captions", 100, log, interval_s=10.0, unit="images", clock=clock)
    progress.start(already_done=20)  # cached: done, but not part of the rate
    for _ in range(8):
        clock.now += 2.0
        progress.advance(5)  # 2.5 items/s
    clock.now += 4.0
    progress.finish()
    assert log.lines == [
        "mllm_captions: started, 80 of 100 images to do, 20 already done",
        "mllm_captions: 45/100 images (45%), 2.50/s, ETA 22 s",  # 10 s after the first line, not before
        "mllm_captions: 60/100 images (60%), 2.00/s, ETA 20 s; finished in 20 s",  # stopped early (a deadline)
    ]


def test_a_loop_with_nothing_to_do_still_logs_a_first_and_a_last_line():
    log = Lines()
    progress = Progress("translations", 7, log, unit="captions")
    progress.finish()
    progress.finish()  # once
    assert log.lines == [
        "translations: started, 0 of 7 captions to do, 7 already done",
        "translations: 7/7 captions (100%), 0.00/s, ETA 0 s; finished in 0 s",
    ]


@pytest.fixture(scope="module")
def demo_partition_logs(tmp_path_factory) -> list[tuple[str | None, str]]:
    """The language pipeline of the demo for Czech, run as `mella demo` runs it (the demo's corpus, site and tiny
    models), with progress lines every 0.5 s; returns its run log as (step, message) pairs."""
    root = tmp_path_factory.mktemp("progress")
    lake, port = str(root / "lake"), free_port()
    prepare_demo_inputs(lake, ["cs"], port)
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MELLA_PROGRESS_INTERVAL_S", "0.5")
    try:
        # The demo crawl's selection, then the language's three phases (sources, its shards, the language run).
        materialize_everything(["cs"], defs=build_definitions(demo_resources(lake, port)), instance=instance,
                               jobs=("selection_job", *LANGUAGE_JOBS), log=lambda line: None,
                               crawls=(DEMO_CRAWL,))  # fmt: skip
    finally:
        monkeypatch.undo()
    runs = instance.get_runs()
    assert runs and all(run.is_success for run in runs)
    return [(entry.step_key, entry.user_message) for run in runs for entry in instance.all_logs(run.run_id)]


@pytest.mark.parametrize(
    ("step", "stage", "unit"),
    [("images", "images", "URLs"), ("mllm_captions", "mllm_captions", "images"),
     ("translations", "translations", "captions")],
)  # fmt: skip
def test_the_run_log_of_a_demo_partition_has_progress_lines_of_each_long_loop(demo_partition_logs, step, stage, unit):
    mine = [message for key, message in demo_partition_logs if key == step and message.startswith(f"{stage}: ")]
    assert re.fullmatch(rf"{stage}: started, \d+ of \d+ {unit} to do(, \d+ already done)?", mine[0]), mine
    last = re.fullmatch(rf"{stage}: (\d+)/(\d+) {unit} \(100%\), \d+\.\d\d/s, ETA 0 s; finished in \d+ s", mine[-1])
    assert last and last[1] == last[2] and int(last[1]) > 0, mine
    for line in mine[1:-1]:
        assert re.fullmatch(rf"{stage}: \d+/\d+ {unit} \(\d+%\), \d+\.\d\d/s, ETA (\d+ s|\d+ min \d\d s)", line), line
