"""The image fetcher on a rerun (issue #3): the loopback site's request log shows that kept images (duplicates
included) and permanent rejects are not requested again, transient failures are, and a changed limit or
``retry_rejected`` revalidates; where nothing changed the rerun's tables equal the first run's."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from PIL import Image, ImageDraw

from mella_assets.definitions import materialize_language
from mella_assets.know.assets import images
from mella_assets.know.image_fetch import ImageFetchOutcome, ImageLimits, fetch_images
from mella_assets.languages import LANGUAGES
from mella_assets.lib.http import HttpFetcher
from mella_assets.lib.lake import LakeStore
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from support.scripted_site import Route, ScriptedSite

# min_side 100 rejects the 80x60 thumbnail; the rerun that lowers it to 48 keeps it.
STRICT = ImageLimits(min_side=100)


def picture(variant: int, size: tuple[int, int] = (200, 150)) -> bytes:
    image = Image.new("RGB", (200, 150), (20 * variant % 255, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10 + 12 * variant, 10, 90 + 12 * variant, 100), fill=(250, 240, 200))
    draw.rectangle((120, 40 + 8 * variant, 190, 140), fill=(120, 20 + 30 * variant, 20))
    out = io.BytesIO()
    image.resize(size).save(out, "JPEG", quality=90)
    return out.getvalue()


def jpeg_route(body: bytes) -> Route:
    return Route(body, content_type="image/jpeg")


ROUTES = {
    "/a.jpg": jpeg_route(picture(1)),
    "/a-copy.jpg": jpeg_route(picture(1)),  # the same bytes: an exact duplicate
    "/a-smaller.jpg": jpeg_route(picture(1, (160, 120))),  # a near duplicate
    "/b.jpg": jpeg_route(picture(2)),
    "/missing.jpg": Route(b"gone", status=404, content_type="text/plain"),
    "/page.jpg": Route(b"<html><body>login</body></html>"),
    "/thumb.jpg": jpeg_route(picture(3, (80, 60))),
    "/flaky.jpg": Route(
        responses=(
            (503, (("Content-Type", "text/plain"),), b"busy"),
            (200, (("Content-Type", "image/jpeg"),), picture(4)),
        )
    ),
    "/forbidden.jpg": Route(b"no", status=403, content_type="text/plain"),
}
KEPT = {"/a.jpg": None, "/a-copy.jpg": "exact", "/a-smaller.jpg": "near", "/b.jpg": None}
REJECTS = {
    "/missing.jpg": ("http_error_404", 404),
    "/page.jpg": ("unexpected_content_type", 200),
    "/thumb.jpg": ("too_small", 200),
    "/flaky.jpg": ("http_error_503", 503),
    "/forbidden.jpg": ("http_error_403", 403),
}


@pytest.fixture
def site() -> Iterator[ScriptedSite]:
    with ScriptedSite(ROUTES) as running:
        yield running


def run(
    site: ScriptedSite,
    store: LakeStore,
    paths: list[str],
    before: ImageFetchOutcome | None = None,
    limits: ImageLimits = STRICT,
    max_workers: int = 4,
    **options: object,
) -> ImageFetchOutcome:
    """One ``images`` run over ``paths``; the site's log holds only this run's requests afterwards."""
    site.log.clear()
    # No retries within a run: the 503 of /flaky.jpg stays a reject until the next run.
    fetcher = HttpFetcher(allowed_networks=["127.0.0.1/32"], max_retries=0, accept_content_types=("image/",))
    return fetch_images(
        LANGUAGES["cs"],
        [f"{site.base_url}{path}" for path in paths],
        fetcher,
        exists=store.exists,
        put=store.put_bytes,
        previous=before.kept if before else None,
        previous_rejects=before.rejects if before else None,
        limits=limits,
        max_workers=max_workers,
        **options,
    )


def requested(site: ScriptedSite) -> set[str]:
    return set(site.paths())


def by_path(site: ScriptedSite, outcome: ImageFetchOutcome) -> tuple[dict, dict]:
    base = len(site.base_url)
    kept = {row["image_url"][base:]: row["duplicate"] for row in outcome.kept.to_dicts()}
    rejects = {row["image_url"][base:]: (row["reason"], row["http_status"]) for row in outcome.rejects.to_dicts()}
    return kept, rejects


def without(frame: pl.DataFrame, site: ScriptedSite, *paths: str) -> pl.DataFrame:
    return frame.filter(~pl.col("image_url").is_in([f"{site.base_url}{p}" for p in paths]))


def test_rerun_requests_only_transient_rejects_and_keeps_everything_else(site, tmp_path: Path):
    store = LakeStore(tmp_path)
    first = run(site, store, list(ROUTES))
    assert by_path(site, first) == (KEPT, REJECTS)

    second = run(site, store, list(ROUTES), first)

    # Kept images (the exact and near duplicates too) and permanent rejects are not asked for again.
    assert requested(site) == {"/flaky.jpg", "/forbidden.jpg"}
    kept, rejects = by_path(site, second)
    assert kept == {**KEPT, "/flaky.jpg": None}
    assert rejects == {path: reject for path, reject in REJECTS.items() if path != "/flaky.jpg"}
    assert without(second.kept, site, "/flaky.jpg").equals(first.kept)
    assert second.rejects.equals(without(first.rejects, site, "/flaky.jpg"))
    stats = second.stats
    assert (stats["reused"], stats["fetched"], stats["rejects_carried_over"], stats["rejects_retried"]) == (4, 2, 3, 2)
    assert (stats["exact_duplicates"], stats["near_duplicates"]) == (1, 1)

    third = run(site, store, list(ROUTES), second)

    assert requested(site) == {"/forbidden.jpg"}
    assert third.kept.equals(second.kept) and third.rejects.equals(second.rejects)


def test_retry_rejected_fetches_every_reject_again(site, tmp_path: Path):
    store = LakeStore(tmp_path)
    first = run(site, store, list(ROUTES))

    second = run(site, store, list(ROUTES), first, retry_rejected=True)

    assert requested(site) == set(REJECTS)
    assert (second.stats["rejects_carried_over"], second.stats["rejects_retried"]) == (0, 5)
    assert by_path(site, second)[1] == {path: reject for path, reject in REJECTS.items() if path != "/flaky.jpg"}


def test_a_changed_limit_validates_its_rejects_again(site, tmp_path: Path):
    store = LakeStore(tmp_path)
    first = run(site, store, list(ROUTES))

    # The duplicate threshold decides no reject: the too-small thumbnail is still carried over.
    same = run(site, store, list(ROUTES), first, limits=replace(STRICT, near_duplicate_bits=3))
    assert "/thumb.jpg" not in requested(site)
    assert by_path(site, same)[1]["/thumb.jpg"] == ("too_small", 200)

    lowered = run(site, store, list(ROUTES), first, limits=replace(STRICT, min_side=48))
    assert requested(site) == {"/thumb.jpg", "/flaky.jpg", "/forbidden.jpg"}
    kept, rejects = by_path(site, lowered)
    assert kept["/thumb.jpg"] is None
    assert set(rejects) == {"/missing.jpg", "/page.jpg", "/forbidden.jpg"}


def test_duplicates_whose_first_copy_is_gone_are_fetched_again_and_stored(site, tmp_path: Path):
    store = LakeStore(tmp_path)
    first = run(site, store, ["/a.jpg", "/a-smaller.jpg", "/a-copy.jpg", "/b.jpg"])

    second = run(site, store, ["/a-smaller.jpg", "/a-copy.jpg", "/b.jpg"], first)

    # The near duplicate becomes the first of its kind: it needs its own blob and its own columns. The exact
    # duplicate of the gone image is now a near duplicate of it, from its own reused hashes.
    assert requested(site) == {"/a-smaller.jpg"}
    assert by_path(site, second)[0] == {"/a-smaller.jpg": None, "/a-copy.jpg": "near", "/b.jpg": None}
    smaller = second.kept.filter(pl.col("image_url").str.ends_with("/a-smaller.jpg")).row(0, named=True)
    assert (smaller["image_sha256"], smaller["phash"]) == (smaller["fetched_sha256"], smaller["fetched_phash"])
    assert (smaller["width"], smaller["height"]) == (160, 120) and store.exists(smaller["image_key"])
    fresh = run(site, LakeStore(tmp_path / "fresh"), ["/a-smaller.jpg", "/a-copy.jpg", "/b.jpg"])
    assert second.kept.equals(fresh.kept)


def test_tables_from_before_the_new_columns_are_read_and_their_duplicates_fetched_once(site, tmp_path: Path):
    store = LakeStore(tmp_path)
    first = run(site, store, list(ROUTES))
    old = ImageFetchOutcome(kept=first.kept.drop("fetched_phash"), rejects=first.rejects.drop("limits_hash"))

    second = run(site, store, list(ROUTES), old)

    # A duplicate's own hash was not kept then; a limit reject says nothing of its limits: both are asked again.
    assert requested(site) == {"/a-copy.jpg", "/a-smaller.jpg", "/thumb.jpg", "/flaky.jpg", "/forbidden.jpg"}
    assert without(second.kept, site, "/flaky.jpg").equals(first.kept)
    carried = without(second.rejects, site, "/thumb.jpg", "/forbidden.jpg")
    assert by_path(site, ImageFetchOutcome(second.kept, carried))[1] == {
        "/missing.jpg": ("http_error_404", 404),
        "/page.jpg": ("unexpected_content_type", 200),
    }
    assert carried["limits_hash"].to_list() == [None, None]


def test_validation_in_the_worker_threads_does_not_depend_on_their_number(site, tmp_path: Path):
    paths = [path for path in ROUTES if path != "/flaky.jpg"]  # its answer changes with each request
    one = run(site, LakeStore(tmp_path / "one"), paths, max_workers=1)
    eight = run(site, LakeStore(tmp_path / "eight"), paths, max_workers=8)

    assert eight.kept.equals(one.kept) and eight.rejects.equals(one.rejects)
    assert sorted(LakeStore(tmp_path / "eight").list("images")) == sorted(LakeStore(tmp_path / "one").list("images"))


def test_images_asset_reports_carried_over_and_retried_rejects(tmp_path: Path):
    with ScriptedSite(ROUTES) as site:
        lake = Lake(root=str(tmp_path / "lake"))
        paths = ["/a.jpg", "/a-copy.jpg", "/missing.jpg", "/flaky.jpg"]
        urls = [f"{site.base_url}{p}" for p in paths]
        pairs = pl.DataFrame({"image_url": urls, "alt_text": ["a", "b", "c", "d"]})
        lake.write_table("alt_text_pairs", "cs", pairs, "00")
        fetcher = ImageFetcher(allowed_networks=["127.0.0.1/32"], delay_s=0.0, max_retries=0)
        resources = {"lake": lake, "fetcher": fetcher}
        materialize_language("cs", [images], resources=resources)
        site.log.clear()

        second = materialize_language("cs", [images], resources=resources)

        assert set(site.paths()) == {"/robots.txt", "/flaky.jpg"}
        metadata = second.asset_materializations_for_node("images")[0].metadata
        assert {k: metadata[k].value for k in ("reused", "fetched", "rejects_carried_over", "rejects_retried")} == {
            "reused": 2,
            "fetched": 1,
            "rejects_carried_over": 1,
            "rejects_retried": 1,
        }
        assert lake.read_table("image_rejects", "cs")["reason"].to_list() == ["http_error_404"]
