"""The polite crawler against a loopback site with robots rules, slow pages, redirects and errors."""

from __future__ import annotations

import time
from pathlib import Path

from mella_assets.commands.crawl import main as crawl_main
from mella_assets.crawl.crawler import crawl, html_fetcher
from mella_assets.crawl.warc import WarcStats, iter_html_responses
from mella_assets.lib.http import DEFAULT_USER_AGENT
from mella_assets.lib.watchdog import stage_deadline
from support.scripted_site import Route, ScriptedSite


def html(*links: str, alt: str = "Pražský hrad") -> bytes:
    anchors = "".join(f'<a href="{link}">x</a>' for link in links)
    return f'<html lang="cs"><body><img src="/i.jpg" alt="{alt}">{anchors}</body></html>'.encode()


ROUTES = {
    "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
    "/": Route(
        html("/a", "/private/secret", "/slow", "/moved", "/flaky", "/photo.jpg", "http://example.org/", "/missing#top")
    ),
    "/a": Route(html("/a/deeper", "/", "mailto:x@y.cz")),
    "/a/deeper": Route(html("/a/deepest")),
    "/a/deepest": Route(html()),
    "/private/secret": Route(html()),
    "/slow": Route(html(), delay_s=0.3),
    "/moved": Route(status=301, headers=(("Location", "/target"),), content_type="text/plain"),
    "/target": Route(html(alt="Cíl přesměrování")),
    "/flaky": Route(
        responses=(
            (503, (("Retry-After", "0"), ("Content-Type", "text/plain")), b"busy"),
            (200, (("Content-Type", "text/html"),), html()),
        )
    ),
    "/photo.jpg": Route(b"\xff\xd8\xff", content_type="image/jpeg"),
}


def fetcher(**overrides):
    options = {"allowed_networks": ["127.0.0.1/32"], "delay_s": 0.02, "backoff_s": 0.05} | overrides
    return html_fetcher(**options)


def test_crawl_obeys_robots_depth_scope_and_retries_and_writes_a_readable_warc(tmp_path: Path):
    with ScriptedSite(ROUTES) as site:
        result = crawl([f"{site.base_url}/"], tmp_path / "landing" / "cs", fetcher(), max_depth=2)
        paths = site.paths()
    base = site.base_url
    assert sorted(result.pages) == sorted(f"{base}{p}" for p in ["/", "/a", "/slow", "/target", "/flaky", "/a/deeper"])
    assert sorted((url[len(base) :], reason, status) for url, reason, status in result.rejects) == [
        ("/missing", "http_error_404", 404),
        ("/photo.jpg", "unexpected_content_type", 200),
        ("/private/secret", "robots_disallowed", None),
    ]
    assert result.out_of_scope == 1
    assert "/private/secret" not in paths and "/a/deepest" not in paths  # robots, then depth 2
    assert paths.count("/robots.txt") == 1 and paths.count("/flaky") == 2
    assert {e.user_agent for e in site.log} == {DEFAULT_USER_AGENT}
    stats = WarcStats()
    pages = list(iter_html_responses(result.warc_path, stats))
    assert sorted(p.page_url for p in pages) == sorted(result.pages)
    assert (stats.malformed, result.warc_path.parent.name) == (0, "cs")
    assert b"C\xc3\xadl p\xc5\x99esm\xc4\x9brov\xc3\xa1n\xc3\xad" in next(
        p.body for p in pages if p.page_url.endswith("/target")
    )


def test_page_limit_stops_the_crawl_and_nothing_is_written_when_no_page_is_stored(tmp_path: Path):
    with ScriptedSite(ROUTES) as site:
        limited = crawl([f"{site.base_url}/"], tmp_path / "a", fetcher(), max_pages=2, max_depth=5)
        refused = crawl([f"{site.base_url}/"], tmp_path / "b", fetcher(allowed_networks=[]))
    assert len(limited.pages) == 2
    assert (refused.warc_path, refused.rejects) == (None, [(f"{site.base_url}/", "blocked_address", None)])
    assert list((tmp_path / "b").iterdir()) == []


def test_mella_crawl_command_writes_into_the_language_landing_folder(tmp_path: Path, capsys):
    with ScriptedSite(ROUTES) as site:
        code = crawl_main(
            [
                "--language", "cs", "--lake", str(tmp_path / "lake"), "--seed", f"{site.base_url}/a",
                "--max-depth", "0", "--delay", "0", "--allow-network", "127.0.0.1/32",
            ]
        )  # fmt: skip
    assert code == 0
    files = list((tmp_path / "lake" / "landing" / "cs").glob("crawl-*.warc.gz"))
    assert len(files) == 1
    assert [p.page_url for p in iter_html_responses(files[0])] == [f"{site.base_url}/a"]
    assert "1 pages" in capsys.readouterr().out


def test_at_the_stage_deadline_the_pages_fetched_are_written_and_the_rest_are_retryable_for_the_next_crawl(
    tmp_path: Path,
):
    # The seed links to fast pages and to one page whose server stays silent far past the stage deadline.
    routes = {
        "/robots.txt": Route(b"User-agent: *\n", content_type="text/plain"),
        "/": Route(html("/a", "/b", "/stuck")),
        "/a": Route(html("/a/next")),
        "/b": Route(html()),
        "/stuck": Route(html(alt="Pomalá stránka"), delay_s=30.0),
        "/a/next": Route(html()),
    }
    with ScriptedSite(routes) as site:
        base = site.base_url
        started = time.monotonic()
        with stage_deadline("crawl", seconds=1.5):
            first = crawl([f"{base}/"], tmp_path / "one", fetcher(timeout_s=60.0), max_depth=2)
        seconds = time.monotonic() - started
        site.routes["/stuck"] = Route(html(alt="Pomalá stránka"))  # the server is well again
        before = len(site.paths())
        second = crawl(first.unfinished, tmp_path / "two", fetcher(), max_depth=0)
        rerun_paths = site.paths()[before:]

    assert seconds < 1.5 + 1.0  # the silent page did not hold the stage past its deadline
    # What was fetched is in the file; the stuck page and the level not started are retryable rejects.
    assert sorted(first.pages) == [f"{base}/", f"{base}/a", f"{base}/b"]
    assert [page.page_url for page in iter_html_responses(first.warc_path)] == first.pages
    assert sorted(first.unfinished) == [f"{base}/a/next", f"{base}/stuck"]
    assert {reason for _, reason, _ in first.rejects} == {"stage_deadline"}
    # The next crawl asks for those only.
    assert sorted(second.pages) == sorted(first.unfinished)
    assert sorted(path for path in rerun_paths if path != "/robots.txt") == ["/a/next", "/stuck"]
