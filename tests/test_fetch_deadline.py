"""Issue #16: hostile input costs a record, never a partition. Every fetch ends by its wall-clock deadline whatever
the server drips (status line, headers, body, chunks, silence, Retry-After); the ``images`` stage keeps its good
images when one URL is slow, and at the stage deadline keeps what it finished; bodies are decoded here (multi-member
gzip, stacked encodings) with every layer capped, so bombs stay ``too_large``."""

from __future__ import annotations

import gzip
import io
import itertools
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from mella_assets.definitions import materialize_language
from mella_assets.know.assets import images
from mella_assets.know.image_fetch import LIMIT_REJECTS, PERMANENT_REJECTS
from mella_assets.lib.http import MAX_CONTENT_ENCODINGS, HttpFetcher, _Refused, decode_content
from mella_assets.lib.robots import RobotsCache
from mella_assets.lib.watchdog import UNFINISHED, map_until_deadline, stage_deadline
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from support.drip_server import DRIP_PATTERNS, DripServer
from support.scripted_site import Route, ScriptedSite

DEADLINE_S = 1.0
SLACK_S = 0.75
# What each drip pattern ends as: a timeout, or the 503 whose Retry-After no retry could wait for.
EXPECTED = {pattern: "timeout" for pattern in DRIP_PATTERNS} | {"retry_after": "http_error_503"}
RETRYABLE = {"timeout", "http_error_503", "stage_deadline"}


def fetcher(**overrides: object) -> HttpFetcher:
    # A per-read timeout far above the deadline: only the deadline can end a drip (or the silence).
    options = {"timeout_s": 10.0, "total_timeout_s": DEADLINE_S, "allowed_networks": ["127.0.0.1/32"]}
    return HttpFetcher(**{**options, "max_per_host": 16, "backoff_s": 0.01, **overrides})


@pytest.fixture(scope="module")
def drip_outcomes(tmp_path_factory) -> dict[str, tuple[str | None, float, str | None, float]]:
    """Every drip pattern fetched, then downloaded, all patterns at once: pattern -> (fetch reason, seconds,
    download reason, seconds)."""
    folder = tmp_path_factory.mktemp("drip")
    with DripServer(interval_s=0.1, max_s=20.0) as server:
        client = fetcher()

        def one(pattern: str) -> tuple[str | None, float, str | None, float]:
            started = time.monotonic()
            result = client.fetch(server.url(pattern))
            fetched = time.monotonic() - started
            started = time.monotonic()
            downloaded = client.download(server.url(pattern), folder / pattern)
            return result.error_reason, fetched, downloaded.error_reason, time.monotonic() - started

        with ThreadPoolExecutor(len(DRIP_PATTERNS)) as pool:
            return dict(zip(DRIP_PATTERNS, pool.map(one, DRIP_PATTERNS), strict=True))


@pytest.mark.parametrize("pattern", DRIP_PATTERNS)
def test_a_dripping_server_costs_one_retryable_reject_by_the_deadline(drip_outcomes, pattern: str):
    reason, seconds, download_reason, download_seconds = drip_outcomes[pattern]
    assert reason == EXPECTED[pattern]
    assert reason not in PERMANENT_REJECTS | LIMIT_REJECTS  # retried by the next run
    assert seconds < DEADLINE_S + SLACK_S, f"{pattern}: the fetch took {seconds:.2f} s"
    assert download_reason == EXPECTED[pattern]
    assert download_seconds < DEADLINE_S + SLACK_S, f"{pattern}: the download took {download_seconds:.2f} s"


def test_a_kept_alive_connection_is_watched_by_the_next_fetch_too():
    routes = {"/fast.png": Route(b"x" * 100, content_type="image/png"), "/slow.png": Route(b"y", delay_s=5.0)}
    with ScriptedSite(routes) as site:
        client = fetcher()
        assert client.fetch(f"{site.base_url}/fast.png").error_reason is None
        started = time.monotonic()
        result = client.fetch(f"{site.base_url}/slow.png")  # the pooled connection of the first fetch
        assert result.error_reason == "timeout"
        assert time.monotonic() - started < DEADLINE_S + SLACK_S
        # The watchdog left the pool usable.
        assert client.fetch(f"{site.base_url}/fast.png").body == b"x" * 100


def test_good_fetches_are_untouched_by_the_watchdog():
    with ScriptedSite({"/a.png": Route(b"a" * 5000, content_type="image/png")}) as site:
        # 40 fetches of one host share 2 slots; the wait for a slot is not part of a fetch's deadline.
        client = fetcher(total_timeout_s=0.3, max_per_host=2)
        results = client.fetch_many([f"{site.base_url}/a.png"] * 40, max_workers=8)
        assert {r.error_reason for r in results} == {None}
        time.sleep(0.4)  # every deadline has passed: pooled sockets stay open
        assert client.fetch(f"{site.base_url}/a.png").error_reason is None


# -- the wait for a host slot ------------------------------------------------------------------------------------
CRAWL_DELAY_S = 0.05


def polite_site(extra: dict[str, Route] | None = None) -> ScriptedSite:
    robots = Route(f"User-agent: *\nCrawl-delay: {CRAWL_DELAY_S}\n".encode(), content_type="text/plain")
    return ScriptedSite({"/robots.txt": robots, "/a.png": Route(b"a" * 500, content_type="image/png"), **(extra or {})})


def test_fetches_queued_behind_a_crawl_delay_all_succeed_although_the_queue_outlasts_their_deadline():
    with polite_site() as site:
        client = fetcher(total_timeout_s=0.5, max_per_host=2, robots=RobotsCache())
        urls = [f"{site.base_url}/a.png?n={n}" for n in range(40)]
        started = time.monotonic()

        results = client.fetch_many(urls, max_workers=40)

        queue_s = time.monotonic() - started
        assert [r.error_reason for r in results] == [None] * 40
        # 40 starts a crawl delay apart: the last waited about 2 s, four times its own deadline.
        assert queue_s >= 39 * CRAWL_DELAY_S > 3 * 0.5
        # Politeness kept: after robots.txt (read before its Crawl-delay is known), starts a delay apart.
        starts = sorted(t for _, t in client.limiter.granted)[1:]
        assert len(starts) == 40 and min(b - a for a, b in itertools.pairwise(starts)) >= CRAWL_DELAY_S


def test_a_dripping_server_still_ends_timeout_within_each_deadline_once_its_slot_is_granted():
    with DripServer(interval_s=0.1, max_s=20.0) as server:
        client = fetcher(max_per_host=1)  # one at a time: each waits for the one before
        started = time.monotonic()

        results = client.fetch_many([server.url("headers")] * 3, max_workers=3)

        assert [r.error_reason for r in results] == ["timeout"] * 3
        # Each holds the slot for its own deadline and no longer.
        assert time.monotonic() - started < 3 * (DEADLINE_S + SLACK_S)
        assert all(r.seconds < 3 * (DEADLINE_S + SLACK_S) for r in results)


def test_a_fetch_still_queued_at_the_stage_deadline_ends_stage_deadline():
    with polite_site() as site:
        client = fetcher(total_timeout_s=5.0, max_per_host=1, delay_s=0.1)
        urls = [f"{site.base_url}/a.png?n={n}" for n in range(40)]
        started = time.monotonic()

        with stage_deadline("images", seconds=1.0):
            results = client.fetch_many(urls, max_workers=40)

        reasons = [r.error_reason for r in results]
        assert time.monotonic() - started < 1.0 + SLACK_S
        # One start per 0.1 s for 1 s: about 10 fetched, the rest still queued and retryable.
        assert 5 <= reasons.count(None) <= 11 and set(reasons) == {None, "stage_deadline"}, reasons
        assert "stage_deadline" not in PERMANENT_REJECTS | LIMIT_REJECTS


# -- content encodings -------------------------------------------------------------------------------------------


def zero_bomb(size: int) -> bytes:
    """gzip of ``size`` zero bytes, made in pieces (no ``size`` bytes in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


A, B = b"A" * 3000, b"B" * 3000
STACKED_BOMB = gzip.compress(zero_bomb(128 << 20))  # 128 MB twice gzipped: ~1 KB
ENCODED = {
    "two members": (gzip.compress(A) + gzip.compress(B), (("Content-Encoding", "gzip"),), A + B),
    "gzip, gzip": (gzip.compress(gzip.compress(A)), (("Content-Encoding", "gzip, gzip"),), A),
    "two header lines": (
        gzip.compress(gzip.compress(A)),
        (("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")),
        A,
    ),
    "deflate, gzip": (gzip.compress(zlib.compress(A)), (("Content-Encoding", "deflate, gzip"),), A),
    "raw deflate": (zlib.compress(A)[2:-4], (("Content-Encoding", "deflate"),), A),
    "x-gzip, identity": (gzip.compress(A), (("Content-Encoding", "x-gzip, identity"),), A),
    "trailing zeros after a member": (gzip.compress(A) + bytes(8), (("Content-Encoding", "gzip"),), A),
}
REFUSED = {
    "gzip bomb": (zero_bomb(32 << 20), (("Content-Encoding", "gzip"),), "too_large"),
    "stacked bomb": (STACKED_BOMB, (("Content-Encoding", "gzip, gzip"),), "too_large"),
    "too many layers": (
        b"x",
        (("Content-Encoding", ", ".join(["gzip"] * (MAX_CONTENT_ENCODINGS + 1))),),
        "unsupported_content_encoding",
    ),
    "brotli (not asked for)": (b"\x0b\x02\x80hello\x03", (("Content-Encoding", "br"),), "unsupported_content_encoding"),
    "corrupt gzip": (
        b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 20,
        (("Content-Encoding", "gzip"),),
        "content_decoding_error",
    ),
}


@pytest.fixture(scope="module")
def encoded_site():
    routes = {
        f"/{n}": Route(body, content_type="text/plain", headers=headers)
        for n, (body, headers, _) in enumerate([*ENCODED.values(), *REFUSED.values()])
    }
    with ScriptedSite(routes) as site:
        yield site


@pytest.mark.parametrize("name", list(ENCODED))
def test_multi_member_and_stacked_encodings_are_decoded(encoded_site, name: str):
    index = list(ENCODED).index(name)
    result = fetcher(max_bytes=1_000_000, total_timeout_s=10).fetch(f"{encoded_site.base_url}/{index}")
    assert result.error_reason is None
    assert result.body == ENCODED[name][2]
    assert ("Accept-Encoding", "gzip, deflate") not in result.headers  # a request header, not an answer's


@pytest.mark.parametrize("name", list(REFUSED))
def test_bombs_and_unknown_encodings_are_refused(encoded_site, name: str):
    index = len(ENCODED) + list(REFUSED).index(name)
    started = time.monotonic()
    result = fetcher(max_bytes=1_000_000, total_timeout_s=10).fetch(f"{encoded_site.base_url}/{index}")
    assert result.error_reason == REFUSED[name][2]
    assert time.monotonic() - started < 3


def test_each_layer_stops_at_the_cap_not_at_the_end_of_the_bomb():
    produced = 0
    with pytest.raises(_Refused, match="too_large"):
        for piece in decode_content([STACKED_BOMB], "gzip, gzip", 1_000_000):
            produced += len(piece)
            assert len(piece) <= 64 * 1024
    assert produced <= 1_000_000


# -- the images stage ----------------------------------------------------------------------------------------------


def png(variant: int) -> bytes:
    image = Image.new("RGB", (120, 90), (40 * variant % 255, 80, 160))
    image.paste((250, 250, 250), (10 * variant, 10, 10 * variant + 40, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def run_images(tmp_path: Path, server: DripServer, slow: str, **fetcher_options: object):
    server.bodies = {"good-1.png": png(1), "good-2.png": png(2)}
    lake = Lake(root=str(tmp_path / "lake"))
    urls = [server.url("good-1.png"), server.url(slow), server.url("good-2.png")]
    lake.write_table("alt_text_pairs", "cs", pl.DataFrame({"image_url": urls, "alt_text": ["a", "b", "c"]}), "00")
    options = {"allowed_networks": ["127.0.0.1/32"], "delay_s": 0.0, "max_retries": 0, "respect_robots": False}
    resources = {"lake": lake, "fetcher": ImageFetcher(**{**options, **fetcher_options})}
    started = time.monotonic()
    result = materialize_language("cs", [images], resources=resources)
    return result, time.monotonic() - started, lake, urls


def test_one_slow_image_is_a_retryable_reject_and_the_good_ones_are_stored(tmp_path):
    with DripServer(interval_s=0.1, max_s=20.0) as server:
        result, seconds, lake, urls = run_images(tmp_path, server, "headers", timeout_s=10.0, total_timeout_s=1.0)
    assert result.success
    kept = lake.read_table("images", "cs")
    assert sorted(kept["image_url"].to_list()) == sorted([urls[0], urls[2]])
    assert all(lake.exists(key) for key in kept["image_key"])
    rejects = lake.read_table("image_rejects", "cs")
    assert rejects.select("image_url", "reason").rows() == [(urls[1], "timeout")]
    assert seconds < 1.0 + 5.0, f"the stage took {seconds:.1f} s"  # the deadline, plus Dagster's own start


def test_the_stage_deadline_keeps_what_is_done_and_rejects_the_rest_as_retryable(tmp_path, monkeypatch):
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_IMAGES", "1.5")
    with DripServer(interval_s=0.1, max_s=20.0) as server:
        # A fetch deadline far past the stage's: only the stage deadline ends the slow fetch.
        result, seconds, lake, urls = run_images(tmp_path, server, "body", timeout_s=30.0, total_timeout_s=60.0)
        assert result.success
        kept = lake.read_table("images", "cs")
        assert sorted(kept["image_url"].to_list()) == sorted([urls[0], urls[2]])
        assert all(lake.exists(key) for key in kept["image_key"])
        rejects = lake.read_table("image_rejects", "cs")
        assert rejects.select("image_url", "reason").rows() == [(urls[1], "stage_deadline")]
        assert "MELLA_STAGE_TIMEOUT_S_IMAGES=1.5" in rejects["detail"][0]
        assert seconds < 1.5 + 5.0
        metadata = result.asset_materializations_for_node("images")[0].metadata
        assert metadata["unfinished_at_deadline"].value == 1
        # The rerun fetches the unfinished URL only (the stored ones are reused).
        server.requests.clear()
        monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_IMAGES", "1")
        fetcher = ImageFetcher(
            allowed_networks=["127.0.0.1/32"], delay_s=0.0, max_retries=0, respect_robots=False, total_timeout_s=0.5
        )
        rerun = materialize_language("cs", [images], resources={"lake": lake, "fetcher": fetcher})
    assert rerun.success
    assert server.requests == ["/body"]
    assert lake.read_table("image_rejects", "cs")["reason"].to_list() == ["timeout"]


def test_map_until_deadline_returns_the_finished_results_at_the_deadline():
    def work(n: int) -> int:
        time.sleep(5 if n == 2 else 0.01)
        return n * 10

    started = time.monotonic()
    with stage_deadline("images", seconds=0.5):
        results = map_until_deadline(work, [0, 1, 2, 3, 4], max_workers=2)
    assert time.monotonic() - started < 1.5
    assert results == [0, 10, UNFINISHED, 30, 40]
