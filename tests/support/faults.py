"""Fault injection for the language pipeline (issue #8): SIGKILL a stage's process at a chosen point, serve the demo
site with dropped, stalled and failing requests, take the S3 endpoint away mid-run, fill the disk; then compare the
lake with an uninterrupted run row by row.

- :func:`lake_state` digests a lake: every Parquet file by its rows (sorted, location normalised, columns that
  legitimately vary left out: :data:`VARYING_COLUMNS`), every other file by its bytes, temporary files listed apart.
- :class:`RenameTrap` stands in for ``os`` inside ``lib/lake.py``: it counts the lake's renames (each atomic write
  ends in one) and can SIGKILL the process just before or just after the n-th, which is where a crash changes what
  is on disk. ``PYTHONPATH=tests python -m support.faults`` runs one stage that way (the child of the kill tests).
- :class:`FaultySite` serves the demo site and misbehaves on chosen paths (drop, stall, 5xx).
- :class:`TcpOutage` is a TCP proxy in front of an endpoint (moto_server) that can be taken down and brought back
  on the same port: the endpoint disappears for the client while its data survives.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http import HTTPStatus
from pathlib import Path

import polars as pl

from mella_assets.demo.site import _Handler, _SiteHTTPServer
from mella_assets.lib import lake as lake_module
from mella_assets.lib.lake import TMP_PREFIX

# The per-language stages in job order (mella_assets.definitions.language_pipeline_assets).
STAGES = (
    "crawl_sources",
    "raw_crawl",
    "alt_text_pairs",
    "images",
    "d_know",
    "mllm_captions",
    "translations",
    "d_ling",
    "mella_dataset",
)
# Columns whose values differ between two correct runs, left out of the comparison (table -> column -> why).
VARYING_COLUMNS: dict[str, dict[str, str]] = {
    "crawl_sources": {"registered_at": "wall-clock time the file was first registered"},
}
# Inputs the pipeline only reads: not digested (they are copies of one build). Plus the memo of registered files'
# sha256, named by each file's modification time (crawl.source_sha256): a cache, different in every lake.
STATIC_PREFIXES = ("demo/", "models/", "cache/sha256/")
LOCATION_TOKEN = "<lake>"


# -- comparing lakes ------------------------------------------------------------------------------------------------


def table_of(key: str) -> str | None:
    """The table a lake key belongs to (``tables/<name>/...``), else None."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tables" else None


def row_digest(frame: pl.DataFrame, table: str | None = None, roots: tuple[str, ...] = ()) -> dict[str, object]:
    """Rows, duplicate rows and an order-independent sha256 of a table's rows; the lake's own location
    (``roots``: folder, file:// URI, s3:// URI) is replaced by a token, so two lakes holding the same data agree."""
    varying = VARYING_COLUMNS.get(table or "", {})
    kept = frame.select([c for c in frame.columns if c not in varying])
    rows = []
    for row in kept.iter_rows(named=True):
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
        for root in roots:
            text = text.replace(root, LOCATION_TOKEN)
        rows.append(text)
    rows.sort()
    return {
        "rows": len(rows),
        "duplicates": len(rows) - len(set(rows)),
        "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
    }


def location_roots(root: Path, *extra: str) -> tuple[str, ...]:
    """Spellings of a local lake's location inside its tables (URI first: it contains the path)."""
    root = Path(root).resolve()
    return (root.as_uri(), str(root), *extra)


def lake_files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def temp_files(root: Path) -> list[str]:
    """Lake keys of leftover temporary files (a writer killed between write and rename)."""
    return [key for key, _ in lake_files(root) if any(part.startswith(TMP_PREFIX) for part in key.split("/"))]


def lake_state(root: Path, roots: tuple[str, ...] | None = None) -> dict[str, object]:
    """key -> digest of every file of a local lake (Parquet by rows, the rest by bytes), temporary files and
    static inputs left out (see :func:`temp_files`)."""
    roots = roots if roots is not None else location_roots(root)
    state: dict[str, object] = {}
    for key, path in lake_files(root):
        if key.startswith(STATIC_PREFIXES) or any(part.startswith(TMP_PREFIX) for part in key.split("/")):
            continue
        if path.suffix == ".parquet":
            state[key] = row_digest(pl.read_parquet(path), table_of(key), roots)
        else:
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def state_differences(actual: dict[str, object], expected: dict[str, object]) -> list[str]:
    """Readable differences between two lake states (empty when they are identical)."""
    problems = [f"missing {key}" for key in sorted(set(expected) - set(actual))]
    problems += [f"unexpected {key}" for key in sorted(set(actual) - set(expected))]
    problems += [
        f"differs {key}: {actual[key]} != {expected[key]}"
        for key in sorted(set(actual) & set(expected))
        if actual[key] != expected[key]
    ]
    return problems


def duplicated_tables(state: dict[str, object]) -> list[str]:
    return [key for key, digest in state.items() if isinstance(digest, dict) and digest["duplicates"]]


# -- killing a stage at a lake rename --------------------------------------------------------------------------------


class RenameTrap:
    """Replaces ``os`` inside ``lib/lake.py``: counts renames (two events each: just before, just after) and, with
    ``kill_at``, SIGKILLs this process at that event. Event 2k leaves write k's temporary file on disk and the old
    object in place; event 2k+1 leaves write k done and the next not started."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.events = 0

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def _event(self) -> None:
        if self.kill_at is not None and self.events == self.kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        self.events += 1

    def replace(self, source: object, target: object) -> None:
        self._event()
        os.replace(source, target)  # type: ignore[arg-type]
        self._event()


@contextmanager
def rename_trap(kill_at: int | None = None) -> Iterator[RenameTrap]:
    trap = RenameTrap(kill_at)
    lake_module.os = trap  # type: ignore[assignment]
    try:
        yield trap
    finally:
        lake_module.os = os


def stage_resources(lake_root: Path, site_port: int, site_dir: Path, **fetcher: object) -> dict[str, object]:
    """The code location's resources on ``lake_root`` with the demo site served elsewhere (``site_dir``), short
    generations (the tiny models' text is random anyway: this only saves time) and ``fetcher`` overriding image
    fetcher fields (timeouts, retries)."""
    from mella_assets.demo.resources import DemoImageFetcher, demo_resources
    from mella_assets.resources import Captioner, Translator

    resources = demo_resources(str(lake_root), site_port, site_dir=str(site_dir))
    resources["captioner"] = Captioner(max_new_tokens=12)
    resources["translator"] = Translator(enforce_output_language=False, max_new_tokens=16)
    if fetcher:
        resources["fetcher"] = DemoImageFetcher(site_dir=str(site_dir), site_port=site_port, **fetcher)
    return resources


def materialize_stage(stage: str, language: str, resources: dict[str, object]):
    """Materialize one stage for one language in this process; returns the Dagster result (no raise)."""
    from mella_assets.definitions import language_pipeline_assets, materialize_language

    (asset,) = [a for a in language_pipeline_assets() if a.node_def.name == stage]
    return materialize_language(language, [asset], resources=resources, raise_on_error=False)


def run_failure_message(result) -> str:
    """The error messages of a failed Dagster result's steps, joined."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(f"{error.cls_name}: {error.message.strip()}")
                error = error.cause
    return "\n".join(messages)


def materialize_pipeline(language: str, resources: dict[str, object]):
    """Every stage of the language pipeline, its runs in phase order (sources, each shard, the language), in this
    process (no raise)."""
    from mella_assets.definitions import materialize_language

    return materialize_language(language, resources=resources, raise_on_error=False)


# -- a disk that fills up: a real tmpfs of a chosen size (needs a mount namespace: `unshare -rm`) ----------------------

PAGE = 4096
ROOMY = 512 * 1024 * 1024


def _mount_tmpfs(folder: Path, size: int, remount: bool = False) -> None:
    import subprocess

    options = f"{'remount,' if remount else ''}size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


def _used_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def tree_pages(folder: Path) -> int:
    """Pages the files under ``folder`` take on a tmpfs (each file rounded up to whole pages)."""
    return sum(-(-path.stat().st_size // PAGE) for _, path in lake_files(folder))


def disk_full_cells(
    stages: list[str], states: Path, out: Path, mount: Path, language: str, site_port: int, site_dir: Path
) -> list[dict[str, object]]:
    """For each stage: the lake before it on a tmpfs with room for half of what the stage writes; run the stage
    (it must fail), copy the lake out (``out/<stage>-full``), make room, run it again, copy out
    (``out/<stage>-rerun``). ``states/<i>`` is the reference lake before stage i (``states/<len>``: after all)."""
    import shutil

    mount.mkdir(parents=True, exist_ok=True)
    _mount_tmpfs(mount, ROOMY)
    skip = shutil.ignore_patterns("demo", "models")
    results = []
    for stage in stages:
        index = STAGES.index(stage)
        lake = mount / "lake"
        _mount_tmpfs(mount, ROOMY, remount=True)
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(states / str(index), lake)
        written_pages = max(0, tree_pages(states / str(index + 1)) - tree_pages(states / str(index)))
        size = _used_bytes(mount) + (written_pages // 2) * PAGE
        _mount_tmpfs(mount, size, remount=True)
        resources = stage_resources(lake, site_port, site_dir)
        started = time.monotonic()
        full = materialize_stage(stage, language, resources)
        full_seconds = time.monotonic() - started
        shutil.copytree(lake, out / f"{stage}-full", ignore=skip)
        _mount_tmpfs(mount, ROOMY, remount=True)
        started = time.monotonic()
        rerun = materialize_stage(stage, language, resources)
        rerun_seconds = time.monotonic() - started
        shutil.copytree(lake, out / f"{stage}-rerun", ignore=skip)
        results.append(
            {
                "stage": stage,
                "free_bytes": (written_pages // 2) * PAGE,
                "written_bytes": written_pages * PAGE,
                "full_success": full.success,
                "full_error": run_failure_message(full),
                "full_seconds": round(full_seconds, 2),
                "rerun_success": rerun.success,
                "rerun_error": run_failure_message(rerun),
                "rerun_seconds": round(rerun_seconds, 2),
            }
        )
    return results


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault-injection children of tests/test_fault_injection.py.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("stage", "pipeline", "disk-full"):
        command = commands.add_parser(name)
        command.add_argument("--lake", required=True)
        command.add_argument("--language", required=True)
        command.add_argument("--site-port", type=int, required=True)
        command.add_argument("--site-dir", required=True)
        if name == "stage":
            command.add_argument("--stage", required=True, choices=STAGES)
            command.add_argument("--kill-at", type=int, default=None, help="rename event at which to SIGKILL")
        if name == "disk-full":
            command.add_argument("--stages", required=True, help="comma-separated")
            command.add_argument("--states", required=True, help="folder of reference lakes 0..N")
            command.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "disk-full":
        results = disk_full_cells(args.stages.split(","), Path(args.states), Path(args.out), Path(args.lake),
                                  args.language, args.site_port, Path(args.site_dir))  # fmt: skip
        print(json.dumps(results))
        return 0
    resources = stage_resources(Path(args.lake), args.site_port, Path(args.site_dir))
    if args.command == "pipeline":
        result = materialize_pipeline(args.language, resources)
        return 0 if result.success else 1
    with rename_trap(args.kill_at) as trap:
        result = materialize_stage(args.stage, args.language, resources)
    print(json.dumps({"success": result.success, "events": trap.events, "error": run_failure_message(result)}))
    return 0 if result.success else 1


# -- a misbehaving web server ---------------------------------------------------------------------------------------

DROP, STALL, ERROR_503 = "drop", "stall", "503"


class _FaultyHandler(_Handler):
    server: _FaultySiteServer

    def _respond(self, send_body: bool) -> None:
        site = self.server.site
        action = site.next_action(self.path)
        if action == DROP:
            # Close without a byte of answer, resetting the connection (what a crashed server or proxy does).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.close()
            return
        if action == STALL:
            time.sleep(site.stall_s)
        if action == ERROR_503:
            body = b"Service Unavailable\n"
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
            return
        super()._respond(send_body)


class _FaultySiteServer(_SiteHTTPServer):
    def __init__(self, site: FaultySite, root: Path, port: int) -> None:
        self.site = site
        _SiteHTTPServer.__init__(self, root, port)
        self.RequestHandlerClass = _FaultyHandler

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: dropped and timed-out connections are the point."""


class FaultySite:
    """The demo site on ``127.0.0.1:port`` whose chosen paths misbehave: ``faults[path]`` is the list of actions
    for that path's next requests (``drop``, ``stall`` for ``stall_s``, ``503``), one per request; a path with no
    actions left is served normally. ``clear()`` ends every fault; ``served`` counts requests per path."""

    def __init__(self, site_dir: Path, port: int, stall_s: float = 5.0) -> None:
        self.site_dir = Path(site_dir)
        self.port = port
        self.stall_s = stall_s
        self.faults: dict[str, list[str]] = {}
        self.served: dict[str, int] = {}
        self.applied: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: _FaultySiteServer | None = None

    def next_action(self, path: str) -> str | None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + 1
            actions = self.faults.get(path)
            if not actions:
                return None
            action = actions.pop(0)
            self.applied.append((path, action))
            return action

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def start(self) -> FaultySite:
        self._server = _FaultySiteServer(self, self.site_dir, self.port)
        threading.Thread(target=self._server.serve_forever, name=f"faulty-site-{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultySite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- an endpoint that goes away ---------------------------------------------------------------------------------------


class TcpOutage:
    """A TCP proxy ``127.0.0.1:port`` -> ``target_port``. ``down()`` closes the listener and resets every open
    connection (clients see a refused or broken connection, as when the server stops); ``up()`` listens again on
    the same port. ``down_after_puts=n`` goes down by itself when the n-th request starting with ``PUT`` arrives
    (that request is not forwarded)."""

    def __init__(self, target_port: int, port: int = 0, down_after_puts: int | None = None) -> None:
        self.target_port = target_port
        self.port = port
        self.down_after_puts = down_after_puts
        self.puts = 0
        self.went_down_at: float | None = None
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> TcpOutage:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = list(self._open), set()
            if self.went_down_at is None:
                self.went_down_at = time.monotonic()
        if listener is not None:
            listener.close()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            except OSError:
                pass

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open.update({client, upstream})
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and data.startswith(b"PUT "):
                    with self._lock:
                        self.puts += 1
                        trip = self.down_after_puts is not None and self.puts >= self.down_after_puts
                    if trip:
                        self.down_after_puts = None
                        self.down()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.close()

    def __enter__(self) -> TcpOutage:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


if __name__ == "__main__":
    sys.exit(_main())
