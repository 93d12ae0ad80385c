"""The demo corpus: native texts, noisy pages, deterministic WARC files and the loopback site that serves images."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from mella_assets.demo.corpus import (
    LEGACY_CHARSETS,
    build_demo_corpus,
    corpus_languages,
    demo_texts,
    english_sentences,
    load_corpus,
)
from mella_assets.demo.site import DemoSiteServer, ensure_demo_site_server

LANGUAGES = ["ar", "cs", "hu", "ko", "ru", "sr", "th", "vi"]
BASE_URL = "http://127.0.0.1:18470"
SCRIPT = {
    "ar": re.compile(r"[\u0600-\u06ff]"),
    "ko": re.compile(r"[\uac00-\ud7a3]"),
    "th": re.compile(r"[\u0e00-\u0e7f]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "sr_cyrl": re.compile(r"[\u0400-\u04ff]"),
    "latin": re.compile(r"[A-Za-zÀ-ɏ]"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    lake = tmp_path_factory.mktemp("lake")
    return lake, build_demo_corpus(lake, BASE_URL, LANGUAGES)


def test_every_language_has_six_pages_and_fifteen_content_images_with_alts_in_its_script():
    assert corpus_languages() == LANGUAGES
    for code in LANGUAGES:
        corpus = load_corpus(code)
        pages = corpus["pages"]
        alts = [image["alt"] for page in pages for image in page["images"]]
        assert len(pages) >= 6, code
        assert {page["topic"] for page in pages} >= {"news", "food", "travel", "culture"}, code
        assert len(alts) >= 15, code
        assert len(set(alts)) == len(alts), code
        assert all(4 <= len(alt.split()) <= 20 for alt in alts if code != "th"), code
        assert len(corpus["extra_sentences"]) >= 20, code
        if code in ("ar", "ko", "th", "ru"):
            assert all(SCRIPT[code].search(alt) for alt in alts), code
        elif code == "sr":
            assert sum(bool(SCRIPT["sr_cyrl"].search(alt)) for alt in alts) >= 10
            assert sum(not SCRIPT["sr_cyrl"].search(alt) for alt in alts) >= 6
        else:
            assert all(SCRIPT["latin"].search(alt) for alt in alts), code


def test_demo_texts_hold_native_alts_and_the_english_sentences():
    texts = demo_texts(["ko"])
    assert "뚝배기에서 보글보글 끓고 있는 돼지고기 김치찌개" in texts
    assert texts[-len(english_sentences()) :] == english_sentences()
    assert len(english_sentences()) >= 40


def test_each_language_has_six_pages_and_nineteen_or_more_content_images(demo):
    _, site = demo
    assert {code: len(site.pages[code]) for code in LANGUAGES} == dict.fromkeys(LANGUAGES, 6)
    assert all(len(site.content_images(code)) >= 19 for code in LANGUAGES)


def test_every_page_carries_the_noise_real_pages_have(demo):
    _, site = demo
    for code in LANGUAGES:
        kinds = Counter(image.kind for image in site.images[code])
        for kind in (
            "logo", "social_icon", "tracking_pixel", "empty_alt", "missing_alt", "english_alt", "filename_alt",
            "url_alt", "number_alt", "short_alt", "near_duplicate", "duplicate", "different_alt",
            "related_language", "broken", "fake_image", "too_small",
        ):  # fmt: skip
            assert kinds[kind] >= 1, (code, kind)
        pixel = site.site_dir / code / "img" / "pixel.gif"
        assert Image.open(pixel).size == (1, 1)
        html = b"".join(page.html for page in site.pages[code])
        assert b'alt="" width="1" height="1"' in html
        assert b"srcset=" in html and b"data-src=" in html and b"<picture>" in html
        assert f'<base href="{BASE_URL}/{code}/">'.encode() in html
        assert b'property="og:locale"' in html


def test_one_page_per_language_is_encoded_in_its_legacy_charset(demo):
    _, site = demo
    for code in LANGUAGES:
        label, codec = LEGACY_CHARSETS[code]
        legacy = site.pages[code][1]
        assert legacy.charset == label
        assert f'<meta charset="{label}">'.encode() in legacy.html
        assert legacy.title in legacy.html.decode(codec)
    assert site.pages["cs"][1].html != site.pages["cs"][1].html.decode("cp1250").encode("utf-8")
    assert site.pages["vi"][1].html.startswith(b"\xef\xbb\xbf")


def test_images_are_real_and_varied(demo):
    _, site = demo
    img = site.site_dir / "cs" / "img"
    assert Image.open(img / "logo.png").size == (200, 60)
    assert Image.open(img / "facebook.png").size == (32, 32)
    assert Image.open(img / "thumb-32.jpg").size == (32, 32)
    assert Image.open(img / "berounka-reka.jpg").mode == "CMYK"
    assert Image.open(img / "koblihy-masopust.png").mode == "RGBA"
    assert (img / "photo-gallery.jpg").read_bytes().startswith(b"<!DOCTYPE html>")
    assert not (img / "deleted-photo.jpg").exists()
    original, copy = Image.open(img / "prazsky-hrad-zima.jpg"), Image.open(img / "prazsky-hrad-zima-copy.jpg")
    assert (copy.width, copy.height) == (original.width * 3 // 4, original.height * 3 // 4)


def test_warcio_reads_back_every_record(demo):
    lake, site = demo
    for code in LANGUAGES:
        files = sorted((lake / "landing" / code).glob("*.warc.gz"))
        assert [f.name for f in files] == [f"demo-{code}-00.warc.gz", f"demo-{code}-01.warc.gz"]
        records = []
        for path in files:
            with path.open("rb") as stream:
                for record in ArchiveIterator(stream):
                    status = record.http_headers.get_statuscode() if record.rec_type == "response" else None
                    content_type = record.http_headers.get_header("Content-Type") if status else None
                    records.append((record.rec_type, status, content_type, record.rec_headers["WARC-Target-URI"]))
                    record.content_stream().read()
        types = Counter(record[0] for record in records)
        assert types == {"warcinfo": 2, "request": 10, "response": 10}
        html_pages = [r[3] for r in records if r[1] == "200" and r[2].startswith("text/html")]
        assert html_pages == [page.url for page in site.pages[code]]
        assert sorted(r[1] for r in records if r[1] and not (r[1] == "200" and r[2].startswith("text/html"))) == [
            "200", "200", "301", "404",
        ]  # fmt: skip


def test_two_builds_give_byte_identical_files_and_leave_unchanged_files_alone(demo, tmp_path):
    lake, _ = demo
    build_demo_corpus(tmp_path, BASE_URL, LANGUAGES)
    first = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    expected = {p.relative_to(lake): p.read_bytes() for p in lake.rglob("*") if p.is_file()}
    assert first == expected
    warc = tmp_path / "landing" / "ko" / "demo-ko-00.warc.gz"
    stamp = warc.stat().st_mtime_ns
    build_demo_corpus(tmp_path, BASE_URL, ["ko"])
    assert warc.stat().st_mtime_ns == stamp


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], b""


def test_server_serves_images_with_their_type_and_404s_missing_files_and_traversal(demo, tmp_path):
    _, site = demo
    (tmp_path / "secret.txt").write_text("secret")
    with DemoSiteServer(site.site_dir, 0) as server:
        base = server.base_url
        status, content_type, body = _get(f"{base}/cs/img/prazsky-hrad-zima.jpg")
        assert (status, content_type) == (200, "image/jpeg")
        assert body == (site.site_dir / "cs" / "img" / "prazsky-hrad-zima.jpg").read_bytes()
        assert _get(f"{base}/cs/img/pixel.gif?page=3")[:2] == (200, "image/gif")
        assert _get(f"{base}/cs/img/photo-gallery.jpg")[:2] == (200, "image/jpeg")
        assert _get(f"{base}/cs/img/deleted-photo.jpg")[0] == 404
        assert _get(f"{base}/cs/img/")[0] == 404
        assert _get(f"{base}/cs/%2e%2e/%2e%2e/secret.txt")[0] == 404
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 404")


def test_ensure_starts_one_server_per_port_and_none_when_the_port_is_taken(demo):
    _, site = demo
    with DemoSiteServer(site.site_dir, 0) as other:
        assert ensure_demo_site_server(site.site_dir, other.port) is None
    started = ensure_demo_site_server(site.site_dir, _free_port())
    try:
        assert started is not None
        assert ensure_demo_site_server(site.site_dir, started.port) is started
        assert _get(f"{started.base_url}/robots.txt")[0] == 200
    finally:
        started.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unknown_language_is_an_error_that_names_the_missing_file(tmp_path: Path):
    with pytest.raises(ValueError, match="no demo corpus for language 'xx'"):
        build_demo_corpus(tmp_path, BASE_URL, ["xx"])
