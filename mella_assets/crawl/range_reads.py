"""Read selected WARC records by byte range and extract their pages, without downloading any WARC whole
(Dagster-free).

Every Common Crawl record is its own gzip member, so ``(warc_filename, warc_record_offset, warc_record_length)`` of a
selection (``crawl/cc_index.py``) is a complete ``.warc.gz`` by itself. The records are read once each (a record
selected for several languages too), sorted by file and offset; neighbours in a file are read in one request when
the bytes between them are few (:func:`plan_ranges`: at most ``max_gap_bytes`` apart and at most
:data:`MAX_WASTE_FRACTION` of the range's bytes unselected), so a selection never costs more than 1.1 x its own
bytes.

The WARC base is operator configuration (``https://data.commoncrawl.org/``, ``s3://commoncrawl/``, any folder or
URL), trusted like a registered source: it does not go through the SSRF-guarded page fetcher, but every request
has connect and read timeouts. Requests run ``concurrency`` at a time under one global rate (a token bucket of
``rate`` requests/s). ``429``, ``503 SlowDown`` and other ``5xx`` answers, timeouts and dropped connections are
retried with exponential backoff; a ``Retry-After`` (seconds or an HTTP date, capped at
:data:`MAX_RETRY_AFTER_S`) is waited out, and on ``429`` / ``503`` it pauses every request, not only the one that
got it. After ``max_attempts`` a range's records are recorded as failures (``reason``: ``http_503``, ``timeout``,
``connection_error``, ``short_read``, ``range_not_supported``...); a failure never raises for the batch.

The records read are written, in batches of ~:data:`BATCH_BYTES`, to an in-memory file that the existing WARC
reader and page extractor (:func:`mella_assets.crawl.html.extract_warc`) read like any ``.warc.gz``; each page's
``warc_uri`` and ``record_offset`` are then set to the record's place in the original file, so the rows equal those
of whole-file extraction.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.warc import WarcStats
from mella_assets.settings import Settings, load_settings

DEFAULT_CONCURRENCY = 8
DEFAULT_RATE = 20.0  # requests/s in all; Common Crawl answers 503 SlowDown to clients much faster than this
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT_S = 30.0  # connect and read, each (a record is ~1 MB at most)
# Neighbouring records closer than this are read in one request (a capture's request and metadata records, ~1-2
# KB gzipped, sit between two consecutive responses in a Common Crawl WARC).
DEFAULT_MAX_GAP_BYTES = 8192
MAX_WASTE_FRACTION = 0.1  # unselected bytes in a coalesced range, at most this share of its selected bytes
MAX_RANGE_BYTES = 8 << 20  # one request's bytes are held in memory: bounded
MAX_RETRY_AFTER_S = 120.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
BATCH_BYTES = 32 << 20  # gzipped record bytes extracted at a time: bounds memory whatever the selection's size
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SLOW_DOWN_STATUSES = frozenset({429, 503})  # the server asks every client request to wait

FAILURE_SCHEMA = pl.Schema(
    {
        "warc_filename": pl.String,
        "warc_record_offset": pl.Int64,
        "warc_record_length": pl.Int64,
        "reason": pl.String,
        "attempts": pl.Int32,
    }
)


@dataclass(frozen=True, order=True)
class RecordSpan:
    """One record's place: file (relative to the WARC base), offset and length in bytes."""

    warc_filename: str
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class ReadRange:
    """One request: bytes ``[start, end)`` of a file, holding ``records``."""

    warc_filename: str
    start: int
    end: int
    records: tuple[RecordSpan, ...]


def record_spans(selection: pl.DataFrame) -> list[RecordSpan]:
    """The distinct records of a selection, by file and offset (a record selected for two languages once)."""
    unique = selection.select("warc_filename", "warc_record_offset", "warc_record_length").unique()
    return sorted(RecordSpan(*row) for row in unique.iter_rows())


def plan_ranges(
    records: Iterable[RecordSpan], max_gap_bytes: int = DEFAULT_MAX_GAP_BYTES, max_range_bytes: int = MAX_RANGE_BYTES
) -> list[ReadRange]:
    """The requests that read ``records``: neighbours coalesced while the gap is at most ``max_gap_bytes``, the
    unselected bytes stay within :data:`MAX_WASTE_FRACTION` of the selected ones and the range within
    ``max_range_bytes``."""
    ranges: list[ReadRange] = []
    current: list[RecordSpan] = []
    useful = waste = 0
    for record in sorted(set(records)):
        if record.length <= 0 or record.offset < 0:
            raise ValueError(f"bad record span {record}")
        if current:
            last = current[-1]
            gap = record.offset - last.end
            fits = (
                record.warc_filename == last.warc_filename
                and 0 <= gap <= max_gap_bytes
                and waste + gap <= MAX_WASTE_FRACTION * (useful + record.length)
                and record.end - current[0].offset <= max_range_bytes
            )
            if fits:
                current.append(record)
                useful, waste = useful + record.length, waste + gap
                continue
            ranges.append(ReadRange(last.warc_filename, current[0].offset, last.end, tuple(current)))
        current, useful, waste = [record], record.length, 0
    if current:
        ranges.append(ReadRange(current[0].warc_filename, current[0].offset, current[-1].end, tuple(current)))
    return ranges


# -- sources ------------------------------------------------------------------------------------------------------


class RangeError(Exception):
    """A read that failed: ``reason`` (a stable snake_case word), whether another attempt may succeed, and how long
    the server asked to wait (seconds, or None)."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class RangeSource(Protocol):
    def read(self, warc_filename: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a file; raises :class:`RangeError`."""

    def location(self, warc_filename: str) -> str:
        """The URI a page read from the file records as its ``warc_uri``."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), capped at
    :data:`MAX_RETRY_AFTER_S`; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return min(max(moment.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def _status_error(status: int, retry_after: str | None) -> RangeError:
    return RangeError(f"http_{status}", status in RETRY_STATUSES, parse_retry_after(retry_after), status)


class FileSource:
    """WARC files under a local folder."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(base).expanduser().resolve()

    def location(self, warc_filename: str) -> str:
        return (self.base / warc_filename).as_uri()

    def read(self, warc_filename: str, start: int, end: int) -> bytes:
        try:
            with open(self.base / warc_filename, "rb") as handle:
                handle.seek(start)
                return handle.read(end - start)
        except FileNotFoundError:
            raise RangeError("not_found", retryable=False) from None
        except OSError:
            raise RangeError("read_error", retryable=True) from None


class HttpSource:
    """WARC files under an ``http(s)://`` base, read with ``Range`` requests (one keep-alive session per thread)."""

    def __init__(self, base: str, timeout_s: float = DEFAULT_TIMEOUT_S, user_agent: str = "mella-range-reader") -> None:
        self.base = base.rstrip("/") + "/"
        self.timeout = (timeout_s, timeout_s)
        self.user_agent = user_agent
        self._local = threading.local()

    def location(self, warc_filename: str) -> str:
        return self.base + warc_filename.lstrip("/")

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def read(self, warc_filename: str, start: int, end: int) -> bytes:
        import requests

        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity", "User-Agent": self.user_agent}
        try:
            with self._session().get(
                self.location(warc_filename), headers=headers, timeout=self.timeout, stream=True
            ) as response:
                if response.status_code == 200 and start > 0:
                    # The server ignored Range: reading on would download the whole file.
                    raise RangeError("range_not_supported", retryable=False, status=200)
                if response.status_code not in (200, 206):
                    raise _status_error(response.status_code, response.headers.get("Retry-After"))
                return response.raw.read(end - start, decode_content=False)
        except requests.Timeout:
            raise RangeError("timeout", retryable=True) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            raise RangeError("connection_error", retryable=True) from None


class S3Source:
    """WARC files under ``s3://bucket/prefix``, read with ranged GetObject (endpoint and credentials: settings)."""

    def __init__(self, base: str, settings: Settings | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        import boto3
        from botocore.config import Config

        settings = settings if settings is not None else load_settings()
        bucket, _, prefix = base.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            # One attempt: retries, backoff and the global rate are ours, shared with the other requests.
            config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1}),
        )

    def _key(self, warc_filename: str) -> str:
        return f"{self.prefix}/{warc_filename.lstrip('/')}" if self.prefix else warc_filename.lstrip("/")

    def location(self, warc_filename: str) -> str:
        return f"s3://{self.bucket}/{self._key(warc_filename)}"

    def read(self, warc_filename: str, start: int, end: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self._key(warc_filename), Range=f"bytes={start}-{end - 1}"
            )
            return answer["Body"].read()
        except ClientError as error:
            meta = error.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            if status in (403, 404) or error.response.get("Error", {}).get("Code") in ("NoSuchKey", "AccessDenied"):
                raise RangeError(
                    "not_found" if status == 404 else "access_denied", retryable=False, status=status
                ) from None
            raise _status_error(status, meta.get("HTTPHeaders", {}).get("retry-after")) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise RangeError("timeout", retryable=True) from None
        except BotoCoreError:
            raise RangeError("connection_error", retryable=True) from None


def open_source(warc_base: str, settings: Settings | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> RangeSource:
    """The source for a WARC base: a folder, ``s3://bucket/prefix`` or an ``http(s)://`` URL."""
    base = str(warc_base)
    if base.startswith(("http://", "https://")):
        return HttpSource(base, timeout_s)
    if base.startswith("s3://"):
        return S3Source(base, settings, timeout_s)
    if "://" in base and not base.startswith("file://"):
        raise ValueError(f"unsupported WARC base {base!r}: give a folder, s3:// or http(s)://")
    return FileSource(base.removeprefix("file://"))


# -- fetching: one global rate, retries, bounded concurrency -----------------------------------------------------


class RateLimiter:
    """A token bucket of one token refilled ``rate`` times a second: request starts are at least ``1/rate`` s apart
    across all threads; :meth:`pause_until` holds every request back (a server's ``Retry-After``)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._pauses = 0
        self._lock = threading.Lock()

    def wait(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                start = max(now, self._next)
                self._next = start + self.interval
                pauses = self._pauses
            if start > now:
                time.sleep(start - now)
            with self._lock:
                if self._pauses == pauses:
                    return
            # A pause came while this request waited for its turn: its turn is after the pause.

    def pause_until(self, moment: float) -> None:
        with self._lock:
            if moment > self._next:
                self._next = moment
                self._pauses += 1


@dataclass
class ReadStats:
    """What reading a selection cost: requests sent (retries included), bytes received, records read or failed."""

    requests: int = 0
    retries: int = 0
    bytes_read: int = 0
    records_read: int = 0
    records_failed: int = 0
    ranges: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Fetched:
    range: ReadRange
    data: bytes | None
    reason: str | None
    attempts: int


class _Fetcher:
    def __init__(self, source: RangeSource, limiter: RateLimiter, max_attempts: int, stats: ReadStats) -> None:
        self.source, self.limiter, self.max_attempts, self.stats = source, limiter, max_attempts, stats
        self.lock = threading.Lock()

    def fetch(self, read: ReadRange) -> _Fetched:
        reason = "no_attempt"
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.wait()
            with self.lock:
                self.stats.requests += 1
                self.stats.retries += attempt > 1
            try:
                data = self.source.read(read.warc_filename, read.start, read.end)
                with self.lock:
                    self.stats.bytes_read += len(data)
                if len(data) == read.end - read.start:
                    return _Fetched(read, data, None, attempt)
                error = RangeError("short_read", retryable=True)
            except RangeError as failure:
                error = failure
            reason = error.reason
            if not error.retryable or attempt == self.max_attempts:
                break
            backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            delay = error.retry_after if error.retry_after is not None else backoff
            if error.status in SLOW_DOWN_STATUSES:
                self.limiter.pause_until(time.monotonic() + delay)
            time.sleep(delay)
        return _Fetched(read, None, reason, attempt)


def fetch_ranges(
    ranges: list[ReadRange],
    source: RangeSource,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate: float = DEFAULT_RATE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    stats: ReadStats | None = None,
) -> Iterator[_Fetched]:
    """Fetch ``ranges`` ``concurrency`` at a time under one rate limit; yields each result in the order of
    ``ranges`` (at most ``2 x concurrency`` held at once)."""
    stats = stats if stats is not None else ReadStats()
    fetcher = _Fetcher(source, RateLimiter(rate), max(1, max_attempts), stats)
    pending: deque[Future[_Fetched]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="range-read") as pool:
        queued = iter(ranges)
        for read in queued:
            pending.append(pool.submit(fetcher.fetch, read))
            if len(pending) >= 2 * concurrency:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# -- extraction ---------------------------------------------------------------------------------------------------


@dataclass
class RangeExtraction:
    """``pages``: one :data:`~mella_assets.crawl.html.RAW_CRAWL_SCHEMA` row per page read, by ``warc_uri`` and
    ``record_offset``; ``failures``: :data:`FAILURE_SCHEMA` rows of the records that could not be read; ``read``:
    requests and bytes; ``warc``: the extractor's counts (non-HTML, non-200, malformed...)."""

    pages: pl.DataFrame
    failures: pl.DataFrame
    read: ReadStats
    warc: WarcStats


@contextlib.contextmanager
def _warc_file(data: bytes) -> Iterator[str]:
    """A path the WARC reader can open holding ``data``: an anonymous in-memory file where the OS has them."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mella-range-batch.warc.gz")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(suffix=".warc.gz") as handle:
        handle.write(data)
        handle.flush()
        yield handle.name


def _extract_batch(
    chunks: list[bytes], spans: list[RecordSpan], source: RangeSource, stats: WarcStats, nearby_context: bool
) -> pl.DataFrame:
    offsets = []
    position = 0
    for chunk in chunks:
        offsets.append(position)
        position += len(chunk)
    with _warc_file(b"".join(chunks)) as path:
        pages = extract_warc(path, stats, nearby_context=nearby_context)
    places = pl.DataFrame(
        {
            "record_offset": offsets,
            "_warc_uri": [source.location(span.warc_filename) for span in spans],
            "_offset": [span.offset for span in spans],
        },
        schema_overrides={"record_offset": pages.schema["record_offset"], "_offset": pages.schema["record_offset"]},
    )
    return (
        pages.join(places, on="record_offset", how="inner")
        .with_columns(warc_uri=pl.col("_warc_uri"), record_offset=pl.col("_offset"))
        .select(pages.columns)
    )


def extract_selection(
    selection: pl.DataFrame,
    warc_base: str,
    stats: WarcStats | None = None,
    *,
    nearby_context: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate: float = DEFAULT_RATE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_gap_bytes: int = DEFAULT_MAX_GAP_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    settings: Settings | None = None,
    source: RangeSource | None = None,
) -> RangeExtraction:
    """The pages of the records in ``selection`` (``warc_filename``, ``warc_record_offset``, ``warc_record_length``;
    other columns ignored), each record read once from ``warc_base`` by range (module docstring)."""
    stats = stats if stats is not None else WarcStats()
    source = source if source is not None else open_source(warc_base, settings, timeout_s)
    read_stats = ReadStats()
    ranges = plan_ranges(record_spans(selection), max_gap_bytes)
    read_stats.ranges = len(ranges)
    frames: list[pl.DataFrame] = []
    failures: list[tuple] = []
    chunks: list[bytes] = []
    spans: list[RecordSpan] = []
    held = 0
    for fetched in fetch_ranges(
        ranges, source, concurrency=concurrency, rate=rate, max_attempts=max_attempts, stats=read_stats
    ):
        if fetched.data is None:
            read_stats.records_failed += len(fetched.range.records)
            failures.extend(
                (span.warc_filename, span.offset, span.length, fetched.reason, fetched.attempts)
                for span in fetched.range.records
            )
            continue
        for span in fetched.range.records:
            start = span.offset - fetched.range.start
            chunks.append(fetched.data[start : start + span.length])
            spans.append(span)
            held += span.length
        read_stats.records_read += len(fetched.range.records)
        if held >= BATCH_BYTES:
            frames.append(_extract_batch(chunks, spans, source, stats, nearby_context))
            chunks, spans, held = [], [], 0
    if chunks or not frames:
        frames.append(_extract_batch(chunks, spans, source, stats, nearby_context))
    pages = pl.concat(frames, how="vertical_relaxed").sort("warc_uri", "record_offset")
    return RangeExtraction(pages, pl.DataFrame(failures, schema=FAILURE_SCHEMA, orient="row"), read_stats, stats)


def pages_by_language(pages: pl.DataFrame, selection: pl.DataFrame, source: RangeSource) -> pl.DataFrame:
    """``pages`` with the ``language`` (and ``shard``, when the selection has it) of every selection row that
    names their record: a page selected for two languages appears once per language."""
    keys = ["language", *(["shard"] if "shard" in selection.columns else [])]
    places = selection.select(
        pl.col("warc_filename").map_elements(source.location, return_dtype=pl.String).alias("warc_uri"),
        pl.col("warc_record_offset").cast(pages.schema["record_offset"]).alias("record_offset"),
        *keys,
    ).unique()
    return pages.join(places, on=["warc_uri", "record_offset"], how="inner")
