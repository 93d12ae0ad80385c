"""The demo's own Common Crawl: one WARC file per language, in Common Crawl's layout with a columnar index over it,
so `mella demo` takes those pages through ``cc_selection`` and range reads (the other file stays in ``landing/``).

Layout under ``<lake>/demo/cc/`` (the demo's ``MELLA_CC_INDEX`` and ``MELLA_CC_WARC_BASE``)::

    crawl-data/<crawl>/segments/0/warc/demo-<code>-01.warc.gz           moved from landing/<code>/
    cc-index/table/cc-main/warc/crawl=<crawl>/subset=warc/part-00000.parquet   the index: Common Crawl's columns

Every record of the demo WARCs is its own gzip member (demo/corpus.py), so an index row's offset and length are an
HTTP range holding one whole record, as in Common Crawl. The index labels every page with its language's ISO 639-3
code (Common Crawl's ``content_languages`` comes from CLD2; the demo's pages are written in their language).
"""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from mella_assets.languages import LANGUAGES

DEMO_CRAWL = "CC-MAIN-DEMO-01"
DEMO_CC_FOLDER = "demo/cc"
INDEXED_FILE = 1  # demo-<code>-01.warc.gz goes through the index; demo-<code>-00 stays a landing file
FETCH_TIME = datetime(2026, 1, 1, tzinfo=UTC)

# The columnar index's schema (Common Crawl's cc-index-schema-flat.json), the columns a selection can use.
INDEX_SCHEMA = pa.schema(
    [
        ("url_surtkey", pa.string()),
        ("url", pa.string()),
        ("url_host_name", pa.string()),
        ("url_host_tld", pa.string()),
        ("url_host_registered_domain", pa.string()),
        ("fetch_time", pa.timestamp("us", tz="UTC")),
        ("fetch_status", pa.int16()),
        ("content_digest", pa.string()),
        ("content_mime_type", pa.string()),
        ("content_mime_detected", pa.string()),
        ("content_charset", pa.string()),
        ("content_languages", pa.string()),
        ("warc_filename", pa.string()),
        ("warc_record_offset", pa.int32()),
        ("warc_record_length", pa.int32()),
        ("warc_segment", pa.string()),
    ]
)


def gzip_members(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(offset, length, decompressed bytes)`` of every gzip member of ``data``, in order."""
    members, offset = [], 0
    while offset < len(data):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        content = inflater.decompress(data[offset:])
        length = len(data) - offset - len(inflater.unused_data)
        members.append((offset, length, content))
        offset += length
    return members


def _head(block: bytes) -> tuple[str, dict[str, str], bytes]:
    """The first line, the headers (lower-case names) and the rest of a WARC or HTTP block."""
    head, _, rest = block.partition(b"\r\n\r\n")
    first, *lines = head.decode("utf-8", "replace").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return first, headers, rest


def index_rows(warc_filename: str, data: bytes, language: str) -> list[dict]:
    """An index row per response record of a WARC file whose records are gzip members."""
    rows = []
    for offset, length, content in gzip_members(data):
        _version, warc, block = _head(content)
        if warc.get("warc-type") != "response":
            continue
        status_line, http, _body = _head(block)
        url = warc["warc-target-uri"]
        host = (urlsplit(url).hostname or "").lower()
        mime = http.get("content-type", "").split(";")[0].strip().lower()
        rows.append(
            {
                "url_surtkey": url,
                "url": url,
                "url_host_name": host,
                "url_host_tld": host.rsplit(".", 1)[-1],
                # A WARC page's shard is its host without "www." (crawl/cc_index.page_shards): the same site here.
                "url_host_registered_domain": host.removeprefix("www."),
                "fetch_time": FETCH_TIME,
                "fetch_status": int(status_line.split()[1]),
                "content_digest": None,
                "content_mime_type": mime,
                "content_mime_detected": mime,
                "content_charset": None,
                "content_languages": LANGUAGES[language].iso639_3[0],
                "warc_filename": warc_filename,
                "warc_record_offset": offset,
                "warc_record_length": length,
                "warc_segment": "0",
            }
        )
    return rows


def build_demo_crawl(lake_root: str | os.PathLike[str], languages: list[str], crawl: str = DEMO_CRAWL) -> Path:
    """Move each language's ``demo-<code>-01.warc.gz`` from ``landing/`` into the demo crawl and write its index;
    returns the crawl's root (``<lake>/demo/cc``). Rerunning after ``build_demo_corpus`` moves the rewritten file
    again (the bytes are the same)."""
    lake_root = Path(lake_root)
    root = lake_root / DEMO_CC_FOLDER
    rows = []
    for code in languages:
        name = f"demo-{code}-{INDEXED_FILE:02d}.warc.gz"
        warc_filename = f"crawl-data/{crawl}/segments/0/warc/{name}"
        target = root / warc_filename
        target.parent.mkdir(parents=True, exist_ok=True)
        landed = lake_root / "landing" / code / name
        if landed.exists():
            os.replace(landed, target)
        rows += index_rows(warc_filename, target.read_bytes(), code)
    index = root / f"cc-index/table/cc-main/warc/crawl={crawl}/subset=warc/part-00000.parquet"
    index.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), index)
    return root
