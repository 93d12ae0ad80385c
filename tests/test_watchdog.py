"""Stage deadlines (lib/watchdog.py): settings, the message, bounded waits on stuck work, cooperative checks."""

import inspect
import threading
import time

import pytest

from mella_assets.lib.cache import JsonCache
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.watchdog import (
    DEFAULT_STAGE_TIMEOUT_S,
    StageDeadline,
    StageTimeout,
    check_deadline,
    current_deadline,
    map_until_deadline,
    map_with_deadline,
    stage_deadline,
    stage_timeout_s,
    watched_stage,
)


def test_a_stage_setting_wins_over_the_global_one_and_both_over_the_default(monkeypatch):
    monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S", raising=False)
    monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S_IMAGES", raising=False)
    assert stage_timeout_s("images")[0] == DEFAULT_STAGE_TIMEOUT_S
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S", "600")
    assert stage_timeout_s("images") == (600.0, "MELLA_STAGE_TIMEOUT_S=600")
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_IMAGES", "30")
    assert stage_timeout_s("images") == (30.0, "MELLA_STAGE_TIMEOUT_S_IMAGES=30")
    assert stage_timeout_s("d_know") == (600.0, "MELLA_STAGE_TIMEOUT_S=600")
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_IMAGES", "0")
    with pytest.raises(ValueError, match="MELLA_STAGE_TIMEOUT_S_IMAGES must be a positive number"):
        stage_timeout_s("images")


def test_the_timeout_message_names_the_stage_the_elapsed_time_and_the_setting():
    deadline = StageDeadline("mllm_captions", 5.0, "MELLA_STAGE_TIMEOUT_S=5", started=time.monotonic() - 7.2)
    expected = r"^stage 'mllm_captions' timed out: still running after 7\.\d s, past its deadline of 5 s "
    with pytest.raises(StageTimeout, match=expected + r"\(MELLA_STAGE_TIMEOUT_S=5\)") as raised:
        deadline.check()
    assert not isinstance(raised.value, OSError)  # I/O code that catches OSError must not swallow it


def test_checks_are_no_ops_outside_a_stage_and_raise_inside_one_past_its_deadline():
    check_deadline()
    assert current_deadline() is None
    with stage_deadline("d_know", seconds=0.05) as deadline:
        assert current_deadline() is deadline
        check_deadline()
        time.sleep(0.06)
        with pytest.raises(StageTimeout, match="stage 'd_know' timed out"):
            check_deadline()
    assert current_deadline() is None


def test_map_keeps_order_and_returns_every_result():
    assert map_with_deadline(lambda n: n * n, list(range(20)), max_workers=4) == [n * n for n in range(20)]
    assert map_with_deadline(str, [], max_workers=4) == []


def test_map_stops_waiting_at_the_deadline_although_a_worker_is_stuck():
    release = threading.Event()

    def work(n: int) -> int:
        if n == 3:
            release.wait(30)  # a socket that never answers
        return n

    started = time.monotonic()
    with stage_deadline("images", seconds=0.5), pytest.raises(StageTimeout, match="stage 'images'"):
        map_with_deadline(work, list(range(6)), max_workers=2)
    assert time.monotonic() - started < 3
    release.set()


def test_map_hands_a_worker_error_to_the_caller():
    def work(n: int) -> int:
        if n == 2:
            raise ValueError("broken item")
        return n

    with pytest.raises(ValueError, match="broken item"):
        map_with_deadline(work, [1, 2, 3], max_workers=1)


def test_a_cached_generation_past_its_deadline_stops_after_the_item_in_hand_and_keeps_it(tmp_path):
    cache = JsonCache(LakeStore(tmp_path), "captions")

    def slow(missing):
        for index in missing:
            time.sleep(0.1)
            yield index, {"text": f"item {index}"}

    with stage_deadline("mllm_captions", seconds=0.25), pytest.raises(StageTimeout):
        cache.get_or_compute([f"{n:064x}" for n in range(20)], slow)
    finished = cache.stored
    assert 2 <= finished < 20
    # The rerun (no deadline) finds what was finished in the cache.
    _, missing = cache.get_or_compute([f"{n:064x}" for n in range(20)], slow)
    assert missing == 20 - finished


def test_a_watched_asset_body_keeps_its_signature_and_runs_under_its_own_stage_name(monkeypatch):
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_EXAMPLE_STAGE", "12")

    def example_stage(context, lake: str, *, limit: int = 3) -> tuple:
        deadline = current_deadline()
        return deadline.stage, deadline.seconds, lake, limit

    watched = watched_stage(example_stage)
    assert inspect.signature(watched) == inspect.signature(example_stage)
    assert watched(None, "lake", limit=4) == ("example_stage", 12.0, "lake", 4)


def test_map_workers_see_the_stage_deadline_of_the_caller():
    # The HTTP fetcher bounds its wait for a host slot by it, from inside the workers.
    with stage_deadline("images", seconds=60) as deadline:
        seen = map_with_deadline(lambda _: current_deadline(), list(range(6)), max_workers=3)
        kept = map_until_deadline(lambda _: current_deadline(), list(range(6)), max_workers=3)
    assert seen == kept == [deadline] * 6
