"""The image fetcher against a hostile loopback site: every bad case ends as its reject reason, and the site's
own request log shows that robots.txt, per-host limits and the address guard were obeyed."""

from __future__ import annotations

import io
import itertools
import struct
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from PIL import Image, ImageDraw

from mella_assets.definitions import materialize_language
from mella_assets.know.assets import images
from mella_assets.know.image_fetch import fetch_images
from mella_assets.languages import LANGUAGES
from mella_assets.lib.http import DEFAULT_USER_AGENT, HttpFetcher, parse_retry_after
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.robots import RobotsCache
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from support.scripted_site import Route, ScriptedSite

DELAY_S = 0.1
# Server-side clocks see scheduling jitter (a first connection, a busy shared 2-core machine).
JITTER_S = 0.06
PER_HOST = 2


def picture(variant: int, size: tuple[int, int] = (200, 150)) -> Image.Image:
    image = Image.new("RGB", (200, 150), (20 * variant % 255, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10 + 12 * variant, 10, 90 + 12 * variant, 100), fill=(250, 240, 200))
    draw.rectangle((120, 40 + 8 * variant, 190, 140), fill=(120, 20 + 30 * variant, 20))
    return image.resize(size)


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def gif_1x1() -> bytes:
    out = io.BytesIO()
    Image.new("P", (1, 1)).save(out, "GIF")
    return out.getvalue()


OK = {f"/ok-{i}.jpg": jpeg(picture(i)) for i in range(1, 5)}
HTML = b"<!DOCTYPE html><html><body><p>Gallery</p></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="400" height="300"><rect/></svg>'


def redirect(location: str) -> Route:
    return Route(status=302, headers=(("Location", location),), content_type="text/plain")


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[ScriptedSite, ScriptedSite]]:
    # 127.0.0.2 plays the private address an attacker redirects to; it answers if anything asks.
    with ScriptedSite({"/secret.jpg": Route(OK["/ok-1.jpg"], content_type="image/jpeg")}, host="127.0.0.2") as inner:
        routes = {path: Route(body, content_type="image/jpeg", delay_s=0.1) for path, body in OK.items()}
        routes |= {
            "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
            "/private/secret.jpg": Route(OK["/ok-1.jpg"], content_type="image/jpeg"),
            "/bomb.png": Route(png_declaring(50_000, 50_000), content_type="image/png"),
            "/truncated.jpg": Route(OK["/ok-2.jpg"][: len(OK["/ok-2.jpg"]) // 2], content_type="image/jpeg"),
            "/vector.svg": Route(SVG, content_type="image/svg+xml"),
            "/pixel.gif": Route(gif_1x1(), content_type="image/gif"),
            "/page.jpg": Route(HTML, content_type="text/html; charset=utf-8"),
            "/fake.jpg": Route(HTML, content_type="image/jpeg"),
            "/huge.jpg": Route(b"\xff" * 300_000, content_type="image/jpeg"),
            "/missing.jpg": Route(b"gone", status=404, content_type="text/plain"),
            "/busy.jpg": Route(
                responses=(
                    (429, (("Retry-After", "1"), ("Content-Type", "text/plain")), b"slow down"),
                    (200, (("Content-Type", "image/jpeg"),), jpeg(picture(7))),
                )
            ),
            "/down.jpg": Route(b"down", status=503, content_type="text/plain"),
            "/copy-of-ok-1.jpg": redirect("/ok-1.jpg"),
            "/ok-1-smaller.jpg": Route(jpeg(picture(1, (160, 120))), content_type="image/jpeg"),
            "/redirect-private.jpg": redirect(f"{inner.base_url}/secret.jpg"),
            "/redirect-metadata.jpg": redirect("http://169.254.169.254/latest/meta-data/"),
        }
        with ScriptedSite(routes) as site:
            # One request before the test: a server's first connection is logged late (thread start-up).
            with urllib.request.urlopen(f"{site.base_url}/ok-1.jpg", timeout=5) as _:
                pass
            site.log.clear()
            site.hits.clear()
            yield site, inner


def site_fetcher() -> HttpFetcher:
    # Only the test site's own address is allowed; 127.0.0.2 stays a refused private address.
    return HttpFetcher(
        max_bytes=100_000,
        allowed_networks=["127.0.0.1/32"],
        max_per_host=PER_HOST,
        delay_s=DELAY_S,
        max_retries=1,
        backoff_s=0.05,
        robots=RobotsCache(),
        accept_content_types=("image/",),
    )


EXPECTED_REJECTS = {
    "/private/secret.jpg": ("robots_disallowed", None),
    "/bomb.png": ("pixel_bomb", 200),
    "/truncated.jpg": ("not_decodable", 200),
    "/vector.svg": ("unsupported_format", 200),
    "/pixel.gif": ("too_small", 200),
    "/page.jpg": ("unexpected_content_type", 200),
    "/fake.jpg": ("not_decodable", 200),
    "/huge.jpg": ("too_large", 200),
    "/missing.jpg": ("http_error_404", 404),
    "/down.jpg": ("http_error_503", 503),
    "/redirect-private.jpg": ("blocked_address", 302),
    "/redirect-metadata.jpg": ("blocked_address", 302),
}
EXPECTED_KEPT = {
    "/ok-1.jpg": None,
    "/ok-2.jpg": None,
    "/ok-3.jpg": None,
    "/ok-4.jpg": None,
    "/busy.jpg": None,
    "/copy-of-ok-1.jpg": "exact",
    "/ok-1-smaller.jpg": "near",
}


@pytest.fixture(scope="module")
def outcome(sites, tmp_path_factory):
    site, _inner = sites
    store = LakeStore(tmp_path_factory.mktemp("lake"))
    urls = [f"{site.base_url}{path}" for path in [*EXPECTED_KEPT, *EXPECTED_REJECTS]]
    fetcher = site_fetcher()
    result = fetch_images(LANGUAGES["cs"], urls, fetcher, exists=store.exists, put=store.put_bytes, max_workers=8)
    return result, store, fetcher


def test_every_hostile_case_ends_as_its_reject_reason_and_good_images_are_kept(sites, outcome):
    site, _ = sites
    result, store, _ = outcome
    base = len(site.base_url)
    rejects = {row["image_url"][base:]: (row["reason"], row["http_status"]) for row in result.rejects.to_dicts()}
    kept = {row["image_url"][base:]: row["duplicate"] for row in result.kept.to_dicts()}
    assert rejects == EXPECTED_REJECTS
    assert kept == EXPECTED_KEPT
    # Duplicates point at the first copy: one blob per distinct picture.
    canonical = result.kept.filter(pl.col("image_url").str.ends_with("/ok-1.jpg"))["image_sha256"][0]
    assert result.kept.filter(pl.col("duplicate").is_not_null())["image_sha256"].to_list() == [canonical] * 2
    assert len(list(store.list("images"))) == 5
    assert result.stats["exact_duplicates"] == 1 and result.stats["near_duplicates"] == 1


def test_no_request_reaches_a_refused_address_or_a_robots_disallowed_path(sites, outcome):
    site, inner = sites
    assert inner.log == []
    # The private host is really listening: only the guard kept the fetcher away.
    with urllib.request.urlopen(f"{inner.base_url}/secret.jpg", timeout=5) as response:
        assert response.status == 200
    assert inner.paths() == ["/secret.jpg"]
    paths = site.paths()
    assert paths.count("/robots.txt") == 1
    assert paths[0] == "/robots.txt"
    assert not [p for p in paths if p.startswith("/private/")]
    assert {entry.user_agent for entry in site.log} == {DEFAULT_USER_AGENT}


def test_per_host_concurrency_and_delay_are_obeyed(sites, outcome):
    site, _ = sites
    log = sorted(site.log, key=lambda e: e.started)
    in_flight = max(sum(1 for o in log if o.started <= e.started < o.ended) for e in log)
    assert in_flight <= PER_HOST
    # The fetcher's own grant log: every start on the host at least the delay after the one before.
    granted = [t for _, t in outcome[2].limiter.granted]
    assert len(granted) == 22 and min(b - a for a, b in itertools.pairwise(granted)) >= DELAY_S
    # The server's log after the first request (a connection's first request is sometimes logged ~0.1 s late
    # on this shared machine): any k consecutive starts span at least (k - 1) delays, up to jitter.
    starts = [e.started for e in log[1:]]
    shortfalls = [
        (j - i) * DELAY_S - (starts[j] - starts[i]) for i in range(len(starts)) for j in range(i + 1, len(starts))
    ]
    assert max(shortfalls) <= JITTER_S, [(round(e.started - starts[0], 3), e.path) for e in log]


def test_429_is_retried_after_the_retry_after_seconds_and_503_gives_up(sites, outcome):
    site, _ = sites
    busy = [e.started for e in site.log if e.path == "/busy.jpg"]
    assert len(busy) == 2
    assert busy[1] - busy[0] >= 1.0
    assert [e.path for e in site.log].count("/down.jpg") == 2  # first try + max_retries=1


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_robots_txt_server_error_disallows_the_whole_host():
    routes = {"/robots.txt": Route(b"oops", status=500, content_type="text/plain"), "/a.jpg": Route(OK["/ok-1.jpg"])}
    with ScriptedSite(routes) as site:
        fetcher = HttpFetcher(allowed_networks=["127.0.0.1/32"], max_retries=0, robots=RobotsCache())
        result = fetcher.fetch(f"{site.base_url}/a.jpg")
        assert (result.error_reason, site.paths()) == ("robots_unavailable", ["/robots.txt"])


def test_missing_robots_txt_allows_everything_and_crawl_delay_is_applied():
    routes = {"/a.jpg": Route(OK["/ok-1.jpg"], content_type="image/jpeg")}
    with ScriptedSite(routes) as site:
        fetcher = HttpFetcher(allowed_networks=["127.0.0.1/32"], robots=RobotsCache())
        assert fetcher.fetch(f"{site.base_url}/a.jpg").error_reason is None
        assert site.paths() == ["/robots.txt", "/a.jpg"]
    routes["/robots.txt"] = Route(b"User-agent: *\nCrawl-delay: 0.3\n", content_type="text/plain")
    with ScriptedSite(routes) as site:
        fetcher = HttpFetcher(allowed_networks=["127.0.0.1/32"], robots=RobotsCache())
        fetcher.fetch_many([f"{site.base_url}/a.jpg"] * 3, max_workers=3)
        starts = sorted(e.started for e in site.log if e.path == "/a.jpg")
        assert [round(b - a, 1) >= 0.3 for a, b in itertools.pairwise(starts)] == [True, True]


def test_images_asset_does_not_fetch_stored_urls_again_on_rerun(sites, tmp_path: Path):
    site, _ = sites
    lake = Lake(root=str(tmp_path / "lake"))
    urls = [f"{site.base_url}{p}" for p in ("/ok-3.jpg", "/ok-4.jpg", "/missing.jpg")]
    lake.write_table("alt_text_pairs", "cs", pl.DataFrame({"image_url": urls, "alt_text": ["a", "b", "c"]}), "00")
    fetcher = ImageFetcher(allowed_networks=["127.0.0.1/32"], delay_s=0.0)
    first = materialize_language("cs", [images], resources={"lake": lake, "fetcher": fetcher})
    before = len(site.log)
    second = materialize_language("cs", [images], resources={"lake": lake, "fetcher": fetcher})
    # The 404 is permanent: its reject is carried over, so nothing at all is requested.
    assert site.log[before:] == []
    metadata = second.asset_materializations_for_node("images")[0].metadata
    assert (metadata["reused"].value, metadata["fetched"].value, metadata["rows_out"].value) == (2, 0, 2)
    assert metadata["rejects_carried_over"].value == 1
    assert lake.read_table("images", "cs").equals(first and lake.read_table("images", "cs"))
    assert lake.read_table("image_rejects", "cs")["reason"].to_list() == ["http_error_404"]
