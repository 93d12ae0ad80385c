"""A polite crawler: user-given seed URLs per language -> standard gzip WARC files in ``landing/<code>/``.

Politeness and safety come from :class:`~mella_assets.lib.http.HttpFetcher` (robots.txt per host, per-host
concurrency and delay, retries with backoff on 429/5xx honouring ``Retry-After``, SSRF guard on every hop, size
and time caps, a real User-Agent). The crawler adds the frontier: breadth first, depth and page limits,
same-site scope (a seed's host and its subdomains), HTML only. Every URL it did not store is recorded with a
reason in :attr:`CrawlResult.rejects`.

Run inside a stage (:mod:`mella_assets.lib.watchdog`), the crawl keeps what it fetched at the stage deadline: the
fetches still running or queued then end ``stage_deadline``, no further level is started, the pages fetched are
written, and the URLs not fetched (those fetches and the frontier left) are ``stage_deadline`` rejects, listed in
:attr:`CrawlResult.unfinished` as the seeds of the next run.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mella_assets.crawl.html import decode_html
from mella_assets.lib.http import FetchResult, HttpFetcher
from mella_assets.lib.watchdog import deadline_passed

HTML_TYPES = ("text/html", "application/xhtml+xml")
# The body we store is already decoded by the HTTP client, so these headers no longer describe it.
_DROPPED_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


@dataclass
class CrawlResult:
    """What one crawl stored and skipped."""

    warc_path: Path | None
    pages: list[str] = field(default_factory=list)
    rejects: list[tuple[str, str, int | None]] = field(default_factory=list)  # (url, reason, http status)
    out_of_scope: int = 0

    @property
    def unfinished(self) -> list[str]:
        """The URLs not fetched by the stage deadline: crawl them next (as seeds)."""
        return [url for url, reason, _ in self.rejects if reason == "stage_deadline"]


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def in_scope(url: str, seed_hosts: set[str]) -> bool:
    """Same site: the URL's host is a seed host or a subdomain of one, over http(s)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"http", "https"}:
        return False
    host = (parts.hostname or "").lower()
    return any(host == seed or host.endswith("." + seed) for seed in seed_hosts)


def page_links(body: bytes, url: str, content_type: str | None) -> list[str]:
    """Absolute, fragment-free ``<a href>`` targets of a page (``rel=nofollow`` skipped), resolved against
    ``<base href>``."""
    text, _, _ = decode_html(body, content_type)
    tree = LexborHTMLParser(text)
    base_node = tree.css_first("base[href]")
    base = urljoin(url, base_node.attributes.get("href") or "") if base_node is not None else url
    links = []
    for anchor in tree.css("a[href]"):
        if "nofollow" in (anchor.attributes.get("rel") or "").lower():
            continue
        href = (anchor.attributes.get("href") or "").strip()
        if not href or href.startswith(("javascript:", "mailto:", "tel:", "data:")):
            continue
        try:
            links.append(urldefrag(urljoin(base, href)).url)
        except ValueError:
            continue
    return links


def _write_response(writer: WARCWriter, result: FetchResult) -> None:
    assert result.body is not None and result.status is not None
    try:
        phrase = HTTPStatus(result.status).phrase
    except ValueError:
        phrase = "OK"
    headers = [(k, v) for k, v in result.headers if k.lower() not in _DROPPED_HEADERS]
    headers.append(("Content-Length", str(len(result.body))))
    http_headers = StatusAndHeaders(f"{result.status} {phrase}", headers, protocol="HTTP/1.1")
    record = writer.create_warc_record(
        result.final_url, "response", payload=io.BytesIO(result.body), http_headers=http_headers
    )
    writer.write_record(record)


def crawl(
    seeds: list[str],
    out_dir: Path,
    fetcher: HttpFetcher,
    *,
    max_pages: int = 100,
    max_depth: int = 2,
    max_workers: int = 4,
) -> CrawlResult:
    """Crawl breadth first from ``seeds`` and write the HTML pages to ``out_dir/crawl-<time>-<id>.warc.gz``.

    The file appears atomically (temp name, then rename), so the landing sensor never sees half of it; no file
    is written when no page was stored."""
    seed_hosts = {_host(seed) for seed in seeds if _host(seed)}
    seen: set[str] = set()
    frontier = []
    for seed in seeds:
        if seed not in seen:
            seen.add(seed)
            frontier.append(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = out_dir / f"crawl-{stamp}-{uuid.uuid4().hex[:8]}.warc.gz"
    tmp = out_dir / f".tmp-{final.name}"
    result = CrawlResult(warc_path=None)
    try:
        with open(tmp, "wb") as handle:
            writer = WARCWriter(handle, gzip=True)
            for _depth in range(max_depth + 1):
                if not frontier or len(result.pages) >= max_pages:
                    break
                batch = frontier[: max_pages - len(result.pages)]
                if deadline_passed():
                    result.rejects.extend((url, "stage_deadline", None) for url in batch)
                    break
                next_frontier: list[str] = []
                for fetched in fetcher.fetch_many(batch, max_workers=max_workers):
                    if fetched.body is None:
                        result.rejects.append((fetched.url, fetched.error_reason or "request_error", fetched.status))
                        continue
                    if not in_scope(fetched.final_url, seed_hosts):
                        result.rejects.append((fetched.url, "redirect_out_of_scope", fetched.status))
                        continue
                    _write_response(writer, fetched)
                    result.pages.append(fetched.final_url)
                    for link in page_links(fetched.body, fetched.final_url, fetched.content_type):
                        if link in seen:
                            continue
                        seen.add(link)
                        if in_scope(link, seed_hosts):
                            next_frontier.append(link)
                        else:
                            result.out_of_scope += 1
                frontier = next_frontier
        if result.pages:
            os.replace(tmp, final)
            result.warc_path = final
    finally:
        tmp.unlink(missing_ok=True)
    return result


def html_fetcher(**kwargs: object) -> HttpFetcher:
    """An :class:`HttpFetcher` for pages: robots.txt obeyed, HTML only (other keyword arguments passed on)."""
    from mella_assets.lib.robots import RobotsCache

    kwargs.setdefault("robots", RobotsCache())
    kwargs.setdefault("accept_content_types", HTML_TYPES)
    kwargs.setdefault("delay_s", 1.0)
    kwargs.setdefault("max_bytes", 5_000_000)
    return HttpFetcher(**kwargs)  # type: ignore[arg-type]
