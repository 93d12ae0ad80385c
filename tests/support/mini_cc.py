"""A miniature Common Crawl for tests and benchmarks: WARC files and a columnar index laid out as Common Crawl's,
and a loopback HTTP server with Range support that logs every request.

:func:`build_mini_crawl` writes, under ``root``:

- ``crawl-data/<crawl>/segments/<segment>/warc/<crawl>-NNNNN.warc.gz``: every record its own gzip member, each
  capture a ``request``, ``response`` and ``metadata`` record as in Common Crawl; pages of several languages mixed
  in every file, plus non-200 pages, non-HTML responses, English pages, pages in a non-registry language, pages
  that list a registry language second, and pages on national domains whose index row names no language;
- ``cc-index/table/cc-main/warc/crawl=<crawl>/subset=warc/part-0000N-….c000.gz.parquet``: one row per response
  with the columnar index's column names and types (``fetch_status`` int16, ``warc_record_offset`` and
  ``warc_record_length`` int32, ``fetch_time`` a UTC timestamp; ``crawl`` and ``subset`` are Hive partitions in the
  path, as Spark writes them), sorted by ``url_surtkey``; a ``subset=crawldiagnostics`` part too;
- ``crawl-data/<crawl>/cc-index-table.paths.gz``: the listing of those Parquet files (both subsets).

:class:`MiniCrawl` knows which record each language's selection must return (``expected``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mella_assets.demo.cc_crawl import INDEX_SCHEMA as DEMO_INDEX_SCHEMA
from mella_assets.demo.corpus import english_sentences, load_corpus
from mella_assets.languages import REGISTRY

CRAWL = "CC-MAIN-2099-01"
SEGMENT = "1700000000000.00"
EPOCH = datetime(2099, 1, 2, tzinfo=UTC)

# The columnar index's schema: the demo's (mella_assets/demo/cc_crawl.py), Common Crawl's columns.
INDEX_SCHEMA = DEMO_INDEX_SCHEMA

# Where each language's sites live: a generic domain, and its national one (the registry's first country TLD,
# in the punycode form a URL carries).
_GENERIC_TLD = "com"


@dataclass(frozen=True)
class Capture:
    """One response record of the mini crawl and its index row's facts; ``expected``: the registry language a
    selection must give it (None: not selected)."""

    url: str
    host: str
    tld: str
    registered_domain: str
    status: int
    mime: str
    languages: str | None
    expected: str | None
    warc_filename: str = ""
    offset: int = 0
    length: int = 0


@dataclass
class MiniCrawl:
    """What :func:`build_mini_crawl` wrote."""

    root: Path
    crawl: str
    captures: list[Capture]
    warc_files: list[str]
    index_files: list[str] = field(default_factory=list)

    def expected(self, languages: list[str] | None = None) -> list[Capture]:
        """The captures a selection of ``languages`` (default: all) must return, by file and offset."""
        rows = [c for c in self.captures if c.expected is not None and (languages is None or c.expected in languages)]
        return sorted(rows, key=lambda c: (c.warc_filename, c.offset))

    def warc_path(self, warc_filename: str) -> Path:
        return self.root / warc_filename

    @property
    def listing(self) -> Path:
        return self.root / "crawl-data" / self.crawl / "cc-index-table.paths.gz"


def _ascii_tld(tld: str) -> str:
    return tld.encode("idna").decode("ascii") if not tld.isascii() else tld


def _page_html(title: str, paragraphs: list[str], images: list[tuple[str, str]], lang_attr: str | None) -> bytes:
    lang = f' lang="{lang_attr}"' if lang_attr else ""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    figures = "".join(f'<figure><img src="{src}" alt="{html.escape(alt)}"></figure>' for src, alt in images)
    return (
        f'<!DOCTYPE html><html{lang}><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}{figures}</body></html>\n"
    ).encode()


class _WarcFile:
    """A WARC file being written: one gzip member per record, offsets and lengths of each."""

    def __init__(self, filename: str, moment: datetime) -> None:
        self.filename = filename
        self.buffer = io.BytesIO()
        self.moment = moment
        self.writer = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
        self._member(self.writer.create_warcinfo_record(filename.rsplit("/", 1)[-1], {"software": "mella mini-cc"}))

    def _member(self, record) -> tuple[int, int]:
        raw = io.BytesIO()
        WARCWriter(raw, gzip=False, warc_version="1.1").write_record(record)
        offset = self.buffer.tell()
        self.buffer.write(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
        return offset, self.buffer.tell() - offset

    def capture(self, url: str, status: int, content_type: str, body: bytes) -> tuple[int, int, datetime]:
        """Write request, response and metadata records; the response's (offset, length) and fetch time."""
        self.moment += timedelta(seconds=1)
        date = self.moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        parts = urlsplit(url)
        request = self.writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            length=0,
            http_headers=StatusAndHeaders(
                f"GET {parts.path or '/'} HTTP/1.1", [("Host", parts.netloc)], is_http_request=True
            ),
            warc_headers_dict={"WARC-Date": date},
        )
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Other")
        response = self.writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            http_headers=StatusAndHeaders(
                f"{status} {reason}",
                [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                protocol="HTTP/1.1",
            ),
            warc_headers_dict={"WARC-Date": date},
        )
        metadata = self.writer.create_warc_record(
            url,
            "metadata",
            payload=io.BytesIO(b"fetchTimeMs: 120\r\n"),
            length=18,
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Date": date},
        )
        self._member(request)
        offset, length = self._member(response)
        self._member(metadata)
        return offset, length, self.moment


def _captures_of_language(code: str, pages: int, rng: random.Random) -> list[tuple[Capture, bytes, str]]:
    """``pages`` captures of one language: (capture without its place in a file, body, Content-Type)."""
    language = REGISTRY[code]
    corpus = load_corpus(code)["pages"]
    iso = language.iso639_3[0]
    national = _ascii_tld(language.country_tlds[0])
    english = english_sentences()
    out = []
    for number in range(pages):
        page = corpus[number % len(corpus)]
        site = number % max(1, pages // 4)  # about four pages per site: a site's pages share a shard
        kind = number % 10
        tld = national if kind in (1, 4, 7) else _GENERIC_TLD
        domain = f"{code}-site{site}.{tld}"
        host = f"www.{domain}"
        url = f"https://{host}/{page['topic']}/{number}.html"
        images = [(f"https://{host}/img/{number}-{i}.jpg", image["alt"]) for i, image in enumerate(page["images"])]
        status, mime, content_type, declared, expected = 200, "text/html", "text/html; charset=utf-8", iso, code
        title, paragraphs = f"{page['title']} {number}", page["paragraphs"]
        if kind == 1:  # a national domain, no language in the index: selected by the domain
            declared = None
        elif kind == 2:  # the language second only: not selected
            declared, title, paragraphs = f"eng,{iso}", f"News {number}", [english[number % len(english)]]
            expected = None
        elif kind == 3:  # an error page in the language: not selected
            status = 404
            expected = None
        elif kind == 4:  # a national domain but English by the index: not selected
            declared, title, paragraphs = "eng", f"About us {number}", [english[number % len(english)]]
            expected = None
        elif kind == 5:  # XHTML
            mime, content_type = "application/xhtml+xml", "application/xhtml+xml; charset=utf-8"
        elif kind == 7:  # a national domain: an image response, no language (not HTML: not selected)
            url = f"https://{host}/img/{number}.jpg"
            mime, content_type, declared, expected = "image/jpeg", "image/jpeg", None, None
        elif kind == 9:  # two languages, this one first
            declared = f"{iso},eng"
        if mime == "image/jpeg":
            body = b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(600)) + b"\xff\xd9"
        else:
            body = _page_html(title, paragraphs, images, None)
        capture = Capture(url, host, tld, domain, status, mime, declared, expected)
        out.append((capture, body, content_type))
    return out


def _foreign_captures(count: int) -> list[tuple[Capture, bytes, str]]:
    """Pages no registry language selects: Slovak on .sk (a related language's national domain)."""
    out = []
    for number in range(count):
        host = f"www.sk-site{number % 3}.sk"
        url = f"https://{host}/clanok/{number}.html"
        body = _page_html(f"Správy {number}", ["Dnes ráno bolo v Bratislave slnečno a teplo."], [], "sk")
        capture = Capture(url, host, "sk", host.removeprefix("www."), 200, "text/html", "slk", None)
        out.append((capture, body, "text/html; charset=utf-8"))
    return out


def _surt(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels = host.split(".")
    if labels and labels[0] == "www":
        labels = labels[1:]
    return ",".join(reversed(labels)) + ")" + (parts.path or "/")


def build_mini_crawl(
    root: Path,
    languages: tuple[str, ...] = ("ar", "cs", "ru", "sr", "th"),
    pages_per_language: int = 10,
    warc_files: int = 3,
    index_parts: int = 2,
    crawl: str = CRAWL,
    seed: int = 7,
) -> MiniCrawl:
    """Write a miniature crawl under ``root`` (layout: module docstring); languages' pages mixed in every file."""
    rng = random.Random(seed)
    items = [item for code in languages for item in _captures_of_language(code, pages_per_language, rng)]
    items += _foreign_captures(max(3, pages_per_language // 3))
    rng.shuffle(items)
    files = [
        _WarcFile(f"crawl-data/{crawl}/segments/{SEGMENT}/warc/{crawl}-20990102000000-{n:05d}.warc.gz", EPOCH)
        for n in range(warc_files)
    ]
    captures, rows = [], []
    for number, (capture, body, content_type) in enumerate(items):
        warc = files[number % warc_files]
        offset, length, moment = warc.capture(capture.url, capture.status, content_type, body)
        placed = Capture(**{**capture.__dict__, "warc_filename": warc.filename, "offset": offset, "length": length})
        captures.append(placed)
        digest = base64.b32encode(hashlib.sha1(body).digest()).decode()
        rows.append(
            {
                "url_surtkey": _surt(capture.url),
                "url": capture.url,
                "url_host_name": capture.host,
                "url_host_tld": capture.tld,
                "url_host_registered_domain": capture.registered_domain,
                "fetch_time": moment,
                "fetch_status": capture.status,
                "content_digest": digest,
                "content_mime_type": content_type.split(";")[0],
                "content_mime_detected": capture.mime,
                "content_charset": "UTF-8" if capture.mime != "image/jpeg" else None,
                "content_languages": capture.languages,
                "warc_filename": warc.filename,
                "warc_record_offset": offset,
                "warc_record_length": length,
                "warc_segment": SEGMENT,
            }
        )
    for warc in files:
        path = root / warc.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(warc.buffer.getvalue())
    rows.sort(key=lambda row: row["url_surtkey"])
    listing = []
    per_part = -(-len(rows) // index_parts)
    for part in range(index_parts):
        name = f"cc-index/table/cc-main/warc/crawl={crawl}/subset=warc/part-{part:05d}-mini.c000.gz.parquet"
        _write_index(root / name, rows[part * per_part : (part + 1) * per_part])
        listing.append(name)
    # Redirects live in their own subset: a selection must not even read that part.
    diagnostics = f"cc-index/table/cc-main/warc/crawl={crawl}/subset=crawldiagnostics/part-00000-mini.c000.gz.parquet"
    redirect = {**rows[0], "url": rows[0]["url"] + "?old", "fetch_status": 301, "content_languages": None}
    _write_index(root / diagnostics, [redirect])
    listing.append(diagnostics)
    crawl_dir = root / "crawl-data" / crawl
    crawl_dir.mkdir(parents=True, exist_ok=True)
    (crawl_dir / "cc-index-table.paths.gz").write_bytes(gzip.compress(("\n".join(listing) + "\n").encode(), mtime=0))
    return MiniCrawl(root, crawl, captures, [warc.filename for warc in files], listing)


def _write_index(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    pq.write_table(table, path, compression="gzip")


def upload_folder(root: Path, bucket: str, prefix: str, endpoint: str) -> None:
    """Copy every file under ``root`` to ``s3://bucket/prefix/`` (moto in the tests)."""
    import boto3

    from support.s3 import TEST_CREDENTIALS

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


# -- a static file server with Range support and a request log ---------------------------------------------------


@dataclass
class ServedRequest:
    """One request: method, path, Range header (None: whole file), status, body bytes sent, arrival time
    (monotonic seconds)."""

    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int
    arrived: float


class _RangeHandler(BaseHTTPRequestHandler):
    server: _RangeHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the server keeps its own log."""

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        site = self.server.site
        arrived = time.monotonic()
        path = unquote(urlsplit(self.path).path)
        requested = self.headers.get("Range")
        entry = ServedRequest(self.command, path, requested, 0, 0, arrived)
        with site.lock:
            site.log.append(entry)
            # Scripted answers go to WARC reads only, not to the index.
            scripted = site.answers.popleft() if site.answers and not head and path.endswith(".warc.gz") else None
        if scripted is not None or path in site.failing:
            status, headers = scripted if scripted is not None else (500, ())
            entry.status = status
            self._send(status, [*headers, ("Content-Type", "text/plain")], b"SlowDown" if status == 503 else b"error")
            return
        file = (site.folder / path.lstrip("/")).resolve()
        if not file.is_relative_to(site.folder) or not file.is_file():
            entry.status = 404
            self._send(404, [("Content-Type", "text/plain")], b"not found")
            return
        size = file.stat().st_size
        start, end = 0, size  # end exclusive
        status = 200
        if requested and requested.startswith("bytes="):
            first, _, last = requested.removeprefix("bytes=").partition("-")
            if first:
                start, end = int(first), min(size, int(last) + 1 if last else size)
            else:  # a suffix range: the last N bytes
                start, end = max(0, size - int(last)), size
            if start >= size:
                entry.status = 416
                self._send(416, [("Content-Range", f"bytes */{size}")], b"")
                return
            status = 206
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes")]
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        entry.status = status
        if head:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            return
        with open(file, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start)
        entry.bytes_sent = len(body)
        self._send(status, headers, body)

    def _send(self, status: int, headers: list[tuple[str, str]] | tuple, body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _RangeHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, site: RangeServer) -> None:
        self.site = site
        super().__init__(("127.0.0.1", 0), _RangeHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: clients that time out and hang up are part of what the tests exercise."""


class RangeServer:
    """Serves ``folder`` on loopback (GET and HEAD, single byte ranges) and logs every request in ``log``.

    ``answers``: (status, headers) the next GETs of WARC files get instead of their bytes, in order (e.g. ``503``
    with ``Retry-After``); ``failing``: paths that always answer 500.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.log: list[ServedRequest] = []
        self.answers: deque[tuple[int, tuple[tuple[str, str], ...]]] = deque()
        self.failing: set[str] = set()
        self.lock = threading.Lock()
        self._server: _RangeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def warc_gets(self) -> list[ServedRequest]:
        with self.lock:
            return [r for r in self.log if r.method == "GET" and r.path.endswith(".warc.gz")]

    def start(self) -> RangeServer:
        self._server = _RangeHTTPServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # `python tests/support/mini_cc.py FOLDER`: serve a folder (its URL on stdout)
    import sys

    with RangeServer(Path(sys.argv[1])) as served:
        print(served.url, flush=True)
        threading.Event().wait()
