"""Registered remote WARCs of real size: streamed to disk (small memory), resumed after a cut, capped, guarded, and
put into a local or S3 lake whole or not at all; `mella crawl` into an S3 lake."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mella_assets.commands.crawl import main as crawl_main
from mella_assets.crawl.sources import COMMON_CRAWL_BASE, download_key, download_source, parse_registry
from mella_assets.crawl.warc import iter_html_responses
from mella_assets.definitions import materialize_language
from mella_assets.lib import lake as lake_module
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.lake import TMP_PREFIX, LakeStore
from support.scripted_site import Route, ScriptedSite

WARC_PATH = "/crawl-data/CC-MAIN-2024-33/segments/1/warc/part-00000.warc.gz"


@pytest.fixture(scope="module")
def big_warc() -> bytes:
    """A ~30 MB gzip WARC made with warcio: HTML pages padded with incompressible bytes."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    rng = __import__("random").Random(7)
    for n in range(100):
        body = f'<html lang="cs"><body><img src="/{n}.jpg" alt="Obrázek {n}"><!--'.encode()
        body += rng.randbytes(512 * 1024).hex().encode()[: 512 * 1024] + b"--></body></html>"
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        record = writer.create_warc_record(
            f"http://big.cz/{n}", "response", payload=io.BytesIO(body), http_headers=headers
        )
        writer.write_record(record)
    return out.getvalue()


class _WarcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _WarcServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the server keeps its own log."""

    def do_GET(self) -> None:
        server = self.server
        asked = self.headers.get("Range")
        server.log.append((self.path, asked))
        if server.busy:
            server.busy -= 1
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in server.redirects:
            self.send_response(302)
            self.send_header("Location", server.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = memoryview(server.body)  # slices of a memoryview allocate nothing: the client's memory is measured
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if match and server.honour_range:
            start = int(match.group(1))
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        if server.announce_length:
            self.send_header("Content-Length", str(len(body) - start))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        end = len(body)
        if server.drop_at is not None and start < server.drop_at:
            end, server.drop_at = server.drop_at, None  # once
            self.close_connection = True
        try:
            for offset in range(start, end, 256 * 1024):
                self.wfile.write(body[offset : min(end, offset + 256 * 1024)])
            if end < len(body):
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True  # the client stopped reading (a cap)


class _WarcServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: bytes, *, honour_range=True, drop_at=None, announce_length=True, redirects=None, busy=0):
        super().__init__(("127.0.0.1", 0), _WarcHandler)
        self.busy = busy  # answers 503 (Retry-After: 0) this many times first
        self.body, self.honour_range, self.drop_at = body, honour_range, drop_at
        self.announce_length, self.redirects = announce_length, dict(redirects or {})
        self.log: list[tuple[str, str | None]] = []

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: hang-ups are what these tests make."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _WarcServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def fetcher(max_bytes: int = 5_000_000_000) -> HttpFetcher:
    return HttpFetcher(
        timeout_s=10, max_bytes=max_bytes, total_timeout_s=120, allowed_networks=["127.0.0.1/32"], backoff_s=0.01
    )


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(f"{TMP_PREFIX}*")] if folder.exists() else []


def test_a_large_warc_streams_into_the_lake_with_small_memory_and_the_right_sha256(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    with _WarcServer(big_warc) as server:
        url = server.url + WARC_PATH
        key = download_key(url)
        tracemalloc.start()
        started = time.perf_counter()
        result = download_source(url, key, store, fetcher())
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"\n{len(big_warc) / 1e6:.1f} MB in {seconds:.2f} s, peak traced {peak / 1e6:.2f} MB")
    assert result.error_reason is None
    assert peak < len(big_warc) / 4
    assert result.sha256 == hashlib.sha256(big_warc).hexdigest() == hashlib.sha256(store.get_bytes(key)).hexdigest()
    assert (result.size, result.resumes, result.restarts) == (len(big_warc), 0, 0)
    assert temp_files(tmp_path / "lake") == []
    assert len(list(iter_html_responses(store.local_path(key)))) == 100


def test_a_dropped_connection_resumes_from_the_bytes_written_when_range_is_honoured(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    half = len(big_warc) // 2
    with _WarcServer(big_warc, drop_at=half) as server:
        url = server.url + WARC_PATH
        result = download_source(url, download_key(url), store, fetcher())
    assert server.log == [(WARC_PATH, None), (WARC_PATH, f"bytes={half}-")]
    assert (result.error_reason, result.resumes, result.restarts) == (None, 1, 0)
    assert store.get_bytes(download_key(url)) == big_warc
    assert result.sha256 == hashlib.sha256(big_warc).hexdigest()


def test_a_server_that_ignores_range_sends_the_file_again_and_the_download_is_still_whole(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    half = len(big_warc) // 2
    with _WarcServer(big_warc, drop_at=half, honour_range=False) as server:
        url = server.url + WARC_PATH
        result = download_source(url, download_key(url), store, fetcher())
    assert server.log == [(WARC_PATH, None), (WARC_PATH, f"bytes={half}-")]
    assert (result.error_reason, result.restarts) == (None, 1)
    assert result.sha256 == hashlib.sha256(big_warc).hexdigest()
    assert store.get_bytes(download_key(url)) == big_warc


def test_a_busy_server_is_retried_and_then_resumed_after_a_cut(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    with _WarcServer(big_warc, busy=2, drop_at=1000) as server:
        url = server.url + WARC_PATH
        result = download_source(url, download_key(url), store, fetcher())
    assert server.log == [(WARC_PATH, None)] * 3 + [(WARC_PATH, "bytes=1000-")]
    assert (result.error_reason, result.resumes) == (None, 1)
    assert store.get_bytes(download_key(url)) == big_warc


def test_a_body_over_the_cap_mid_stream_is_too_large_and_leaves_no_object_and_no_temp_file(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    with _WarcServer(big_warc, announce_length=False) as server:  # no Content-Length: only the stream can tell
        url = server.url + WARC_PATH
        result = download_source(url, download_key(url), store, fetcher(max_bytes=len(big_warc) // 2))
    assert (result.error_reason, result.status, result.sha256) == ("too_large", 200, None)
    assert not store.exists(download_key(url))
    assert temp_files(tmp_path / "lake") == []


def test_a_redirect_to_a_private_address_is_refused_before_any_request_there(tmp_path, big_warc):
    store = LakeStore(tmp_path / "lake")
    with _WarcServer(big_warc, redirects={"/moved.warc.gz": "http://10.1.2.3" + WARC_PATH}) as server:
        url = server.url + "/moved.warc.gz"
        result = download_source(url, download_key(url), store, fetcher())
    assert (result.error_reason, result.status) == ("blocked_address", 302)
    assert server.log == [("/moved.warc.gz", None)]
    assert not store.exists(download_key(url)) and temp_files(tmp_path / "lake") == []


def test_a_bare_common_crawl_path_reads_as_its_url_and_shares_its_download_key():
    path = WARC_PATH.lstrip("/")
    entries = parse_registry(f"{path}\n{COMMON_CRAWL_BASE}{path}\ncrawl-data/../etc/passwd.warc.gz\n")
    assert [(e.text, e.url) for e in entries[:1]] == [(path, COMMON_CRAWL_BASE + path)]
    assert len(entries) == 2 and entries[1].url is None  # the URL was the same entry; ".." stays a local path
    assert download_key(entries[0].url) == download_key(COMMON_CRAWL_BASE + path)


# -- S3 lake (moto_server on loopback) ---------------------------------------------------------------------------


def test_put_file_uploads_in_parts_and_local_path_finds_the_moved_file_without_downloading(
    s3, tmp_path, big_warc, monkeypatch
):
    monkeypatch.setattr(lake_module, "TRANSFER_PART_BYTES", 5 * 2**20)  # S3's smallest part: several parts
    store = LakeStore("s3://mella/put-file", cache_dir=tmp_path / "cache")
    source = tmp_path / "big.warc.gz"
    source.write_bytes(big_warc)
    store.put_file("landing/cs/copy.warc.gz", source)  # a copy: the source stays
    store.put_file("landing/cs/moved.warc.gz", source, move=True)
    assert not source.exists()
    assert re.fullmatch(r'"?[0-9a-f]{32}-\d+"?', store._fs.info(store._object("landing/cs/moved.warc.gz"))["ETag"])
    monkeypatch.setattr(store._fs, "get_file", lambda *a, **k: pytest.fail("downloaded again"))
    assert store.local_path("landing/cs/moved.warc.gz").read_bytes() == big_warc
    monkeypatch.undo()
    assert store.local_path("landing/cs/copy.warc.gz").read_bytes() == big_warc  # streamed down on first use
    assert temp_files(tmp_path / "cache") == []


def test_a_source_downloads_into_an_s3_lake_through_its_cache(s3, tmp_path, big_warc, monkeypatch):
    store = LakeStore("s3://mella/download", cache_dir=tmp_path / "cache")
    with _WarcServer(big_warc, drop_at=len(big_warc) // 3) as server:
        url = server.url + WARC_PATH
        key = download_key(url)
        result = download_source(url, key, store, fetcher())
    assert (result.error_reason, result.resumes) == (None, 1)
    assert hashlib.sha256(store.get_bytes(key)).hexdigest() == result.sha256 == hashlib.sha256(big_warc).hexdigest()
    monkeypatch.setattr(store._fs, "get_file", lambda *a, **k: pytest.fail("downloaded again"))
    assert store.local_path(key) == tmp_path / "cache" / "mella" / "download" / key
    assert temp_files(tmp_path / "cache") == []


def test_mella_crawl_writes_its_warc_into_an_s3_lake(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MELLA_LAKE_CACHE", str(tmp_path / "cache"))
    page = '<html lang="cs"><body><img src="/i.jpg" alt="Pražský hrad"></body></html>'.encode()
    with ScriptedSite({"/a": Route(page)}) as site:
        code = crawl_main(
            [
                "--language", "cs", "--lake", "s3://mella/crawled", "--seed", f"{site.base_url}/a",
                "--max-depth", "0", "--delay", "0", "--allow-network", "127.0.0.1/32",
            ]
        )  # fmt: skip
    assert code == 0
    store = LakeStore("s3://mella/crawled")
    keys = list(store.list("landing/cs"))
    assert len(keys) == 1 and re.fullmatch(r"landing/cs/crawl-\d{8}T\d{6}Z-[0-9a-f]{8}\.warc\.gz", keys[0])
    assert [p.page_url for p in iter_html_responses(store.local_path(keys[0]))] == [f"{site.base_url}/a"]
    assert f"1 pages -> s3://mella/crawled/{keys[0]}" in capsys.readouterr().out
    assert temp_files(tmp_path / "cache") == [] and os.listdir(tmp_path / "cache" / "mella" / "crawled") == ["landing"]


def test_a_fresh_worker_registers_and_extracts_known_warcs_without_downloading_them(s3, tmp_path, monkeypatch):

    from mella_assets.crawl.assets import crawl_sources, raw_crawl
    from mella_assets.demo.corpus import warc_bytes
    from mella_assets.resources.lake import Lake

    def run(cache: Path) -> dict:
        monkeypatch.setenv("MELLA_LAKE_CACHE", str(cache))
        result = materialize_language(
            "cs", [crawl_sources, raw_crawl], resources={"lake": Lake(root="s3://mella/fresh-worker")}
        )
        return {e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}  # fmt: skip

    def warcs(cache: Path) -> list[str]:
        """WARC copies in a worker's cache (the ETag notes beside it, ``*.etags/``, are not copies)."""
        found = cache.rglob("*.warc.gz") if cache.exists() else []
        return sorted(p.name for p in found if not any(part.endswith(".etags") for part in p.parts))

    page = '<html lang="cs"><body><img src="/i.jpg" alt="{}"></body></html>'
    store = LakeStore("s3://mella/fresh-worker", cache_dir=tmp_path / "writer")
    first_bytes = warc_bytes([("http://a.cz/1", page.format("Pražský hrad v zimě"), [])])
    store.put_bytes("landing/cs/a.warc.gz", first_bytes)
    assert run(tmp_path / "worker-1")["raw_crawl"]["warc_files_extracted"] == 1
    assert warcs(tmp_path / "worker-1") == ["a.warc.gz"]

    # A new pod with an empty cache: the WARC is known by its ETag and its extraction is cached.
    again = run(tmp_path / "worker-2")["raw_crawl"]
    assert (again["warc_files_extracted"], again["warc_files_cached"]) == (0, 1)
    assert warcs(tmp_path / "worker-2") == []

    # The object is replaced: a new ETag, so it is downloaded, hashed and extracted again.
    store.put_bytes("landing/cs/a.warc.gz", warc_bytes([("http://a.cz/2", page.format("Karlův most ráno"), [])]))
    changed = run(tmp_path / "worker-3")["raw_crawl"]
    assert (changed["warc_files_extracted"], changed["warc_files_cached"]) == (1, 0)
    assert warcs(tmp_path / "worker-3") == ["a.warc.gz"]
    assert Lake(root="s3://mella/fresh-worker").read_table("raw_crawl", "cs")["page_url"].to_list() == ["http://a.cz/2"]
