"""Progress lines for long loops: ``<stage>: done/total unit (pct), rate/s, ETA`` to a logger (Dagster-free).

Also :func:`terminal_bar`, the command line's progress bar, shown only on a terminal.

A stage's loop (image downloads, captions, translations, evaluation answers) reports each finished item; a line
goes to the log at most every ``interval_s`` seconds (``MELLA_PROGRESS_INTERVAL_S``), plus a first line when the
work starts and a last one when it ends, so even a short run's log shows what was done and how fast. Items already
done before the loop (cached) count towards ``done`` but not towards the rate, which is what the ETA needs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


class InfoLogger(Protocol):
    """Anything with ``info(message)``: a ``logging.Logger``, Dagster's ``context.log``."""

    def info(self, msg: str) -> object: ...


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts finished items of one loop and logs a progress line now and then (thread-safe: the image fetcher's
    workers report from their threads). ``log=None`` counts silently."""

    def __init__(
        self,
        stage: str,
        total: int,
        log: InfoLogger | None,
        interval_s: float = 10.0,
        unit: str = "items",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.log, self.interval_s, self.clock = log, interval_s, clock
        self.done = 0
        self.already_done = 0
        self.started: float | None = None
        self._last_line = 0.0
        self._finished = False
        self._lock = threading.Lock()

    def start(self, already_done: int = 0) -> None:
        """The loop begins, with ``already_done`` items needing no work (cached): logs the first line."""
        with self._lock:
            if self.started is not None:
                return
            self.started = self._last_line = self.clock()
            self.done = self.already_done = already_done
            todo = self.total - already_done
            cached = f", {already_done} already done" if already_done else ""
            self._emit(f"{self.stage}: started, {todo} of {self.total} {self.unit} to do{cached}")

    def advance(self, count: int = 1) -> None:
        """``count`` more items are finished (whatever their outcome); logs a line if ``interval_s`` has passed."""
        if self.started is None:
            self.start()
        with self._lock:
            self.done += count
            now = self.clock()
            if now - self._last_line >= self.interval_s and self.done < self.total:
                self._last_line = now
                self._emit(self.line(now))

    def finish(self) -> None:
        """The loop ended (or stopped at a deadline): logs the last line, once."""
        if self.started is None:
            self.start(already_done=self.total)  # nothing to do: the loop never ran
        with self._lock:
            if self._finished:
                return
            self._finished = True
            now = self.clock()
            elapsed = now - (self.started or now)
            self._emit(f"{self.line(now)}; finished in {_duration(elapsed)}")

    def line(self, now: float) -> str:
        """``stage: done/total unit (pct), rate/s, ETA``: the rate counts only the items done in this loop."""
        elapsed = max(now - (self.started or now), 1e-9)
        worked = self.done - self.already_done
        rate = worked / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        remaining = max(self.total - self.done, 0)
        if remaining == 0:
            eta = "ETA 0 s"
        elif rate > 0:
            eta = f"ETA {_duration(remaining / rate)}"
        else:
            eta = "ETA unknown"
        return f"{self.stage}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.2f}/s, {eta}"

    def _emit(self, message: str) -> None:
        if self.log is not None:
            self.log.info(message)


class ProgressLog:
    """Where a stage's progress lines go and how often: hands each loop its :class:`Progress`. The default logs
    nothing (library calls outside a stage, tests)."""

    def __init__(self, log: InfoLogger | None = None, interval_s: float = 10.0) -> None:
        self.log, self.interval_s = log, interval_s

    def loop(self, stage: str, total: int, unit: str = "items") -> Progress:
        return Progress(stage, total, self.log, interval_s=self.interval_s, unit=unit)


SILENT = ProgressLog()


def terminal_bar(total: int | None, desc: str, unit: str, stream: TextIO | None = None) -> Any:
    """A tqdm progress bar on ``stream`` (default: stderr) when it is a terminal, else a silent one, so a log file
    or a pipe gets only the command's own lines. The bar is cleared when it closes (the command prints its
    summary after it)."""
    from tqdm import tqdm  # a dependency of Dagster's, so every install has it

    stream = stream if stream is not None else sys.stderr
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not stream.isatty(), leave=False)
