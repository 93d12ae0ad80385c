"""Temporary files a killed writer leaves in a local lake: never read as tables, removed by the next write of the
same name when their writer is gone, kept while it may still be writing."""

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import STALE_TEMP_AGE_S, LakeStore, remove_stale_temps, temp_name


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def leftover(folder: Path, final_name: str, pid: int, host: str | None = None) -> Path:
    """A temporary file as a writer with ``pid`` (on this host, or ``host``) would leave it."""
    name = temp_name(final_name).replace(f"-{os.getpid()}-", f"-{pid}-", 1)
    if host is not None:
        name = ".tmp-" + host + name[len(".tmp-") + 8 :]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pl.DataFrame({"language": ["hu"], "n": [99]}).write_parquet(path)
    return path


def test_a_killed_writers_temporary_table_is_never_read_and_goes_with_the_next_write(tmp_path):
    store = LakeStore(tmp_path)
    store.write_table("d_know", "hu", pl.DataFrame({"language": ["hu", "hu"], "n": [1, 2]}))
    folder = tmp_path / "tables" / "d_know" / "language=hu"
    stale = leftover(folder, "data.parquet", dead_pid())
    assert list(store.tables()) == ["d_know"]
    assert run_sql(store, "SELECT sum(n) AS total FROM d_know")["total"].to_list() == [3]

    store.write_table("d_know", "hu", pl.DataFrame({"language": ["hu"], "n": [5]}))
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["data.parquet"]


def test_a_live_writers_temporary_file_and_a_recent_one_from_another_host_are_kept(tmp_path):
    folder = tmp_path / "cache"
    live = leftover(folder, "x.json", os.getppid())  # the process that started this test: alive
    other_host = leftover(folder, "x.json", 12345, host="0000ffff")
    other_name = leftover(folder, "y.json", dead_pid())
    assert remove_stale_temps(folder, "x.json") == 0
    assert live.exists() and other_host.exists() and other_name.exists()

    old = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(other_host, (old, old))
    assert remove_stale_temps(folder, "x.json") == 1
    assert not other_host.exists() and live.exists()


def test_a_blob_rewritten_after_a_crash_cleans_up_the_crashed_writes_temporary_file(tmp_path):
    store = LakeStore(tmp_path)
    stale = leftover(tmp_path / "images" / "ab", "abcd.jpg", dead_pid())
    store.put_bytes("images/ab/abcd.jpg", b"jpeg bytes")
    assert not stale.exists()
    assert list(store.list("images")) == ["images/ab/abcd.jpg"]
