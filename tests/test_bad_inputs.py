"""The bad-input corpus (issues #8, #16): every hostile case — named ones and generated families over WARC/HTML,
URLs, HTTP behaviour, images, text and SQL — ends as its reject reason, count or clear error, none crashes, each
within 10 s and 1 GB of added memory; and a hostile partition still materializes from landing WARC to stored images.

The report (per stage, per class, per case) is written to ``.mella/reports/bad_inputs.md``; ``python -m
benchmarks.bad_inputs`` regenerates benchmarks/results/bad_inputs.md outside pytest.
"""

from __future__ import annotations

import gzip
import io
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from mella_assets.crawl.assets import crawl_sources, raw_crawl
from mella_assets.definitions import materialize_language
from mella_assets.know.assets import alt_text_pairs, images
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from support.bad_inputs import (
    Case,
    cmyk_jpeg,
    corrupted_gzip_warc,
    encode,
    exif_rotated_jpeg,
    jpeg_bomb,
    nested_html,
    pdf_bytes,
    photo,
    png_16bit,
    png_bomb,
    render_report,
    run_bad_input_report,
    truncated,
    truncated_gzip_warc,
    warc_record,
)
from support.bad_inputs_generated import (
    GENERATED_STAGES,
    MAX_CASE_RSS_MB,
    MAX_CASE_SECONDS,
    PENDING_FAMILIES,
    CorpusRow,
    GeneratedCase,
    all_cases,
    render_corpus_report,
    run_corpus,
)
from support.scripted_site import Route, ScriptedSite

REPORT = Path(__file__).resolve().parent.parent / ".mella" / "reports" / "bad_inputs.md"
CASES = all_cases()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[tuple[str, str], CorpusRow]:
    rows, load_seconds = run_corpus(tmp_path_factory.mktemp("bad-inputs"), CASES)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(render_corpus_report(rows, CASES, load_seconds, "this test run"), encoding="utf-8")
    return {(row.stage, row.case): row for row in rows}


def _case_id(case: Case) -> str:
    pending = "[pending]" if isinstance(case, GeneratedCase) and case.family in PENDING_FAMILIES else ""
    return f"{pending}{case.stage}-{case.name}"[:160]


# Cases of PENDING_FAMILIES (none now) would be fixed by a change in flight: asserted like every other case, listed
# on their own in the report.
@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
def test_bad_input_ends_as_its_reason_within_its_time_and_memory(report, case: Case):
    row = report[(case.stage, case.name)]
    assert not row.crashed, row.outcome
    assert row.outcome == row.expected
    assert row.seconds <= MAX_CASE_SECONDS and row.added_rss_mb <= MAX_CASE_RSS_MB, (row.seconds, row.added_rss_mb)


def test_the_corpus_holds_at_least_300_generated_cases_in_every_stage_and_none_crashes(report):
    generated = [case for case in CASES if isinstance(case, GeneratedCase)]
    assert len(generated) >= 300
    per_stage = Counter(case.stage for case in generated)
    assert set(per_stage) == set(GENERATED_STAGES) and min(per_stage.values()) >= 10, per_stage
    assert len({case.family for case in generated}) >= 20
    assert [row for row in report.values() if row.crashed] == []
    table = REPORT.read_text(encoding="utf-8")
    assert f"{len(CASES)} cases ({len(generated)} generated" in table and "## By class" in table


def test_case_names_are_unique_per_stage():
    assert len({(case.stage, case.name) for case in CASES}) == len(CASES)


def test_a_crashing_case_is_reported_not_raised(tmp_path):
    def explode(context):
        raise RuntimeError("boom")

    rows = run_bad_input_report(tmp_path, [Case("images", "explodes", "reject x", explode)])
    assert (rows[0].outcome, rows[0].crashed, rows[0].ok) == ("crash: RuntimeError: boom", True, False)
    assert "| images | 1 | 0 | 1 |" in render_report(rows)


# -- a hostile partition through the real assets --------------------------------------------------------------
HOSTILE_ALTS = {
    "/img/rlo.jpg": "Pražský hrad \u202ev zimě\u202c pokrytý sněhem",
    "/img/zero-width.jpg": "Karlův\u200b most\u200d v\u2060 mlze\ufeff nad Vltavou",
    "/img/controls.jpg": "Staroměstské\x01 náměstí\x1b o vánocích",
    "/img/cmyk.jpg": "Tančící dům na nábřeží v Praze",
    "/img/16bit.png": "Orloj na Staroměstské radnici",
    "/img/exif.jpg": "Katedrála svatého Víta za soumraku",
    "/img/bomb.png": "Vyšehrad a bazilika svatého Petra",
    "/img/bomb.jpg": "Petřínská rozhledna na jaře",
    "/img/truncated.jpg": "Zlatá ulička na Pražském hradě",
    "/img/page.jpg": "Obecní dům v secesním stylu",
    "/img/empty.jpg": "Národní divadlo při západu slunce",
}
EXPECTED_IMAGE_REJECTS = {
    "/img/bomb.png": "pixel_bomb",
    "/img/bomb.jpg": "pixel_bomb",
    "/img/truncated.jpg": "not_decodable",
    "/img/page.jpg": "not_decodable",
    "/img/empty.jpg": "not_decodable",
    # images of the pages before the damage in the broken files, and of the deeply nested page: a name under
    # .invalid never resolves (RFC 2606), so no test ever leaves the machine
    "https://example.invalid/img/0.jpg": "dns_error",
    "https://example.invalid/img/1.jpg": "dns_error",
    "https://example.invalid/img/deep.jpg": "dns_error",
}


def _hostile_site_routes() -> dict[str, Route]:
    bodies = {
        "/img/rlo.jpg": encode(photo((300, 200)), "JPEG"),
        "/img/zero-width.jpg": encode(photo((240, 180)).rotate(90, expand=True), "JPEG"),
        "/img/controls.jpg": encode(photo((320, 200)).transpose(0), "JPEG"),
        "/img/cmyk.jpg": cmyk_jpeg(),
        "/img/16bit.png": png_16bit(),
        "/img/exif.jpg": exif_rotated_jpeg(),
        "/img/bomb.png": png_bomb(),
        "/img/bomb.jpg": jpeg_bomb(),
        "/img/truncated.jpg": truncated(encode(photo(), "JPEG")),
        "/img/page.jpg": b"<!DOCTYPE html><html><body>not an image</body></html>",
        "/img/empty.jpg": b"",
    }
    return {path: Route(body, content_type="image/jpeg") for path, body in bodies.items()}


def _hostile_landing(base_url: str) -> dict[str, bytes]:
    """Landing files of one partition: a good file with hostile pages, and three broken files."""
    figures = "".join(f'<img src="{base_url}{path}" alt="{alt}">' for path, alt in HOSTILE_ALTS.items())
    # URLs the page offers that the fetcher must refuse before sending anything
    with_credentials = base_url.replace("http://", "http://user:pass@") + "/img/rlo.jpg"
    figures += f'<img src="{with_credentials}" alt="Most Legií přes Vltavu večer">'
    figures += f'<img src="{base_url}/img/rlo.jpg?q={"a" * 100_000}" alt="Rudolfinum na náměstí Jana Palacha">'
    good_page = f'<html lang="cs"><body>{figures}</body></html>'.encode()
    records = [
        warc_record("https://example.invalid/galerie", good_page),
        warc_record("https://example.invalid/dokument.pdf", pdf_bytes()),  # a PDF that claims to be HTML
        warc_record("https://example.invalid/hluboko", nested_html()),
        warc_record("https://example.invalid/win", "<img src='/a.jpg' alt='Hrad \x98'>".encode("cp1251", "replace")),
    ]
    return {
        "landing/cs/a-good.warc.gz": b"".join(records),
        "landing/cs/b-truncated.warc.gz": truncated_gzip_warc(),
        "landing/cs/c-corrupted.warc.gz": corrupted_gzip_warc(),
        "landing/cs/d-not-gzip.warc.gz": gzip.compress(b"no warc here\n")[:-4] + b"\x00" * 4,
    }


def test_a_hostile_partition_materializes_with_every_bad_input_recorded(tmp_path):
    with ScriptedSite(_hostile_site_routes()) as site:
        lake = Lake(root=str(tmp_path / "lake"))
        for key, data in _hostile_landing(site.base_url).items():
            lake.store.put_bytes(key, data)
        fetcher = ImageFetcher(allowed_networks=["127.0.0.1/32"], delay_s=0.0, respect_robots=False)
        result = materialize_language(
            "cs",
            [crawl_sources, raw_crawl, alt_text_pairs, images],
            resources={"lake": lake, "fetcher": fetcher, "langid": LanguageIdentification()},
        )
    assert result.success
    metadata = {
        event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    # raw_crawl: two broken files count as malformed, the pages before each break survive.
    assert metadata["raw_crawl"]["skipped"]["malformed"] == 3
    pages = lake.read_table("raw_crawl", "cs")
    assert pages.height == 4 + 2 + 2
    # alt_text_pairs: controls, bidi overrides and zero-width characters are gone from every kept alt text.
    kept = lake.read_table("alt_text_pairs", "cs")
    by_url = {
        url.removeprefix(site.base_url): alt for url, alt in zip(kept["image_url"], kept["alt_text"], strict=True)
    }
    assert by_url["/img/rlo.jpg"] == "Pražský hrad v zimě pokrytý sněhem"
    assert by_url["/img/zero-width.jpg"] == "Karlův most v mlze nad Vltavou"
    assert by_url["/img/controls.jpg"] == "Staroměstské náměstí o vánocích"
    invisible = {"Cc", "Cf", "Cs"}
    assert not [alt for alt in kept["alt_text"] if any(unicodedata.category(ch) in invisible for ch in alt)]
    # images: every hostile body is a reject with its reason; the odd-but-valid ones are stored as RGB JPEGs.
    rejects = lake.read_table("image_rejects", "cs")
    refused = {u.removeprefix(site.base_url): r for u, r in zip(rejects["image_url"], rejects["reason"], strict=True)}
    long_query = "/img/rlo.jpg?q=" + "a" * 100_000
    credentials = site.base_url.replace("http://", "http://user:pass@") + "/img/rlo.jpg"
    # A URL over the extraction budget never becomes a candidate: raw_crawl counts it (no fetch, no image reject).
    assert metadata["raw_crawl"]["skipped"]["candidates_url_too_long"] == 1
    assert long_query not in refused
    assert refused == {**EXPECTED_IMAGE_REJECTS, credentials: "url_has_credentials"}
    assert not [entry.path for entry in site.log if "?q=" in entry.path]  # refused before a request
    stored = lake.read_table("images", "cs")
    assert stored["duplicate"].null_count() == stored.height == 6
    sizes = {u.removeprefix(site.base_url): (w, h) for u, w, h in stored.select("image_url", "width", "height").rows()}
    assert sizes["/img/exif.jpg"] == (100, 200)  # EXIF orientation applied
    assert sizes["/img/cmyk.jpg"] == sizes["/img/16bit.png"] == (200, 150)
    from PIL import Image

    for key in stored["image_key"]:
        with Image.open(io.BytesIO(lake.store.get_bytes(key))) as image:
            assert (image.format, image.mode, image.getexif().get(0x0112)) == ("JPEG", "RGB", None)
