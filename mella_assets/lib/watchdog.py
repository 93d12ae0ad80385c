"""Stage deadlines: no stage can hang a run indefinitely; a stalled one fails with a message that says why.

Every network call carries its own timeout (the HTTP fetcher: connect / read per request and a total per response;
the OpenAI-compatible backend: per request with bounded retries; S3: botocore connect / read timeouts and a bounded
number of attempts, see ``lib/lake.py``). On top of those, each stage has a deadline: ``MELLA_STAGE_TIMEOUT_S``
seconds (default 6 hours), or ``MELLA_STAGE_TIMEOUT_S_<STAGE>`` for one stage (``MELLA_STAGE_TIMEOUT_S_IMAGES``).
Both are :class:`mella_assets.settings.Settings` fields, loaded when a stage starts. The long loops of a stage
check it (between downloads, model batches, WARC files) and raise :class:`StageTimeout` naming the stage, the
time it ran and the setting to change.

A stage whose items are independent keeps what it finished instead: :func:`map_until_deadline` returns at the
deadline with the results done so far and the items it did not finish, which the stage writes as retryable
rejects (the ``images`` stage: reason ``stage_deadline``), so a deadline costs the unfinished records, not the
partition, and the next run fetches only those. Model stages do the same between batches with
:func:`deadline_passed` (``mllm_captions``, ``translations``: ``stage_deadline`` rejects; ``evaluation_scores``
keeps the answers it cached and fails naming how many are left, since its comparison needs every answer).

Dagster's ``dagster/max_runtime`` tag would bound a whole run, but only the daemon's run monitoring enforces it,
so an in-process run (tests, ``mella demo``) would still hang; this deadline is checked by the stage itself.
Work that never returns to a loop (one model batch, a subprocess) is bounded by its own timeouts only.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from mella_assets.settings import DEFAULT_STAGE_TIMEOUT_S as DEFAULT_STAGE_TIMEOUT_S  # re-exported
from mella_assets.settings import STAGE_TIMEOUT_ENV as STAGE_TIMEOUT_ENV
from mella_assets.settings import Settings, load_settings

T = TypeVar("T")
R = TypeVar("R")


class StageTimeout(RuntimeError):
    """A stage ran past its deadline. (Not a ``TimeoutError``: that is an ``OSError``, which I/O code catches.)"""

    def __init__(self, stage: str, elapsed_s: float, limit_s: float, setting: str) -> None:
        super().__init__(
            f"stage {stage!r} timed out: still running after {elapsed_s:.1f} s, past its deadline of {limit_s:g} s "
            f"({setting}); raise the setting if the stage is just slow"
        )
        self.stage = stage
        self.elapsed_s = elapsed_s
        self.limit_s = limit_s
        self.setting = setting


def stage_timeout_s(stage: str, settings: Settings | None = None) -> tuple[float, str]:
    """(seconds, where they came from) for ``stage``: its own setting, the global one, or the default
    (``settings``: default, the settings loaded now)."""
    return (settings if settings is not None else load_settings()).stage_timeout(stage)


@dataclass
class StageDeadline:
    """When ``stage`` must be done: ``seconds`` after ``started`` (monotonic clock)."""

    stage: str
    seconds: float
    setting: str
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def check(self) -> None:
        """Raise :class:`StageTimeout` once the deadline has passed."""
        elapsed = self.elapsed()
        if elapsed > self.seconds:
            raise StageTimeout(self.stage, elapsed, self.seconds, self.setting)


_CURRENT: contextvars.ContextVar[StageDeadline | None] = contextvars.ContextVar("mella_stage_deadline", default=None)


def current_deadline() -> StageDeadline | None:
    """The deadline of the stage running in this thread (None outside a stage)."""
    return _CURRENT.get()


def deadline_passed() -> bool:
    """Whether the running stage is past its deadline (False outside a stage): the check of a stage that keeps
    what it finished, between its batches, instead of raising."""
    deadline = _CURRENT.get()
    return deadline is not None and deadline.remaining() <= 0


def check_deadline() -> None:
    """Raise :class:`StageTimeout` if the running stage is past its deadline; a no-op outside a stage."""
    deadline = _CURRENT.get()
    if deadline is not None:
        deadline.check()


@contextmanager
def stage_deadline(
    stage: str, seconds: float | None = None, settings: Settings | None = None
) -> Iterator[StageDeadline]:
    """Run a block as ``stage`` with a deadline (``seconds``, else from ``settings``, default the settings loaded
    when the block starts)."""
    limit, setting = (seconds, f"{seconds:g} s given") if seconds is not None else stage_timeout_s(stage, settings)
    deadline = StageDeadline(stage, limit, setting)
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def watched_stage(function: Callable[..., R]) -> Callable[..., R]:
    """Decorate an asset body (under ``@dg.asset``) so it runs under the deadline of the stage it is named after.

    ``functools.wraps`` keeps the signature, so Dagster still sees the context, config and resource parameters."""

    @functools.wraps(function)
    def run(*args: object, **kwargs: object) -> R:
        with stage_deadline(function.__name__):
            return function(*args, **kwargs)

    return run


class _Unfinished:
    """The result of an item a :func:`map_until_deadline` did not finish by the deadline."""

    def __repr__(self) -> str:
        return "UNFINISHED"


UNFINISHED = _Unfinished()


def map_until_deadline(
    function: Callable[[T], R], items: Sequence[T], max_workers: int, deadline: StageDeadline | None = None
) -> list[R | _Unfinished]:
    """Like :func:`map_with_deadline`, but at the deadline it returns instead of raising: the results finished by
    then, :data:`UNFINISHED` for the others (started or not). Workers take no new item after the deadline; one
    still in an item finishes it in the background (a daemon thread), its result dropped."""
    return _map(function, items, max_workers, deadline, keep_done=True)


def map_with_deadline(
    function: Callable[[T], R], items: Sequence[T], max_workers: int, deadline: StageDeadline | None = None
) -> list[R]:
    """``[function(item) for item in items]`` on up to ``max_workers`` threads, results in order.

    The caller waits at most until ``deadline`` (default: the running stage's), then raises
    :class:`StageTimeout`; the worker threads are daemons, so one stuck in a slow socket cannot keep the
    process alive after the stage has failed. ``function`` must not raise (the HTTP fetcher returns reasons)."""
    return _map(function, items, max_workers, deadline, keep_done=False)  # type: ignore[return-value]


def _map(
    function: Callable[[T], R],
    items: Sequence[T],
    max_workers: int,
    deadline: StageDeadline | None,
    keep_done: bool,
) -> list[R | _Unfinished]:
    deadline = deadline if deadline is not None else current_deadline()
    results: list[R | _Unfinished] = [UNFINISHED] * len(items)
    lock = threading.Lock()
    if not items:
        return []
    done = threading.Semaphore(0)
    failures: list[BaseException] = []
    next_index = iter(range(len(items)))
    index_lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with index_lock:
                i = next(next_index, None)
            if i is None:
                return
            try:
                result = function(items[i])
            except BaseException as error:  # handed to the caller below
                failures.append(error)
            else:
                with lock:
                    if not stop.is_set():
                        results[i] = result
            done.release()

    for n in range(max(1, min(max_workers, len(items)))):
        # Each worker runs in a copy of the caller's context: the work sees the stage deadline (the HTTP fetcher
        # bounds its wait for a host slot by it).
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(worker,), name=f"mella-worker-{n}", daemon=True).start()
    for _ in items:
        if deadline is None:
            done.acquire()
        elif not done.acquire(timeout=max(0.0, deadline.remaining())):
            with lock:
                stop.set()  # from now on no result lands: the caller reads a settled list
            if keep_done:
                return list(results)
            raise StageTimeout(deadline.stage, deadline.elapsed(), deadline.seconds, deadline.setting)
        if failures:
            stop.set()
            raise failures[0]
    return results
