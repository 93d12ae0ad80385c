"""Fetch URLs safely and politely: SSRF guard on every hop, robots.txt, per-host concurrency and delay, retries
with backoff on 429/5xx (honouring ``Retry-After``), manual redirects, size and time caps, a reason per failure.

Reason codes (stable): ``http_error_<status>``, ``timeout``, ``connection_error``, ``dns_error``,
``too_large``, ``blocked_address``, ``unsupported_scheme``, ``url_has_credentials``, ``invalid_url``,
``too_many_redirects``, ``url_too_long``, ``request_error``, ``robots_disallowed``, ``robots_unavailable``,
``unexpected_content_type``, ``unsupported_content_encoding``, ``content_decoding_error``.

Every fetch (and every download) has a wall-clock deadline, ``total_timeout_s``, that covers all of it but the
wait for a host slot: connect, the status line, the headers and the body, across redirects and retries. A per-read
timeout alone lets a server that drips a byte every half second hold a connection forever; so each request takes
its connect / read timeouts from what is left of the deadline, and a watchdog thread shuts the request's sockets
down at the deadline, whatever read they are blocked in. A fetch that the deadline ends has the reason ``timeout``
(retryable: the next run tries again), never an exception. The time spent queued for the host (its concurrency
and its delay: with a robots ``Crawl-delay`` and many URLs of one host the queue is long, the server fine) moves
the deadline on by as much; the queue is bounded by the running stage's deadline instead
(:mod:`mella_assets.lib.watchdog`), and a fetch still queued then ends ``stage_deadline`` (retryable).

Bodies are decoded here, not by urllib3, so the decoding is the same whatever urllib3 is installed: ``gzip`` (every
member of a multi-member body), ``deflate`` (zlib or raw), stacked (``gzip, gzip``, at most
:data:`MAX_CONTENT_ENCODINGS`), each layer's output counted against ``max_bytes`` as it is produced, so a
decompression bomb, single or stacked, is ``too_large`` after at most ``max_bytes`` per layer. Only what the
fetcher decodes is asked for (``Accept-Encoding: gzip, deflate``); another encoding is
``unsupported_content_encoding``, a corrupt one ``content_decoding_error``.

:meth:`HttpFetcher.download` streams a large body (a 1 GB Common Crawl WARC) to a file instead: the same guard,
retries and caps, the sha256 computed on the way, and a dropped connection resumed with a ``Range`` request when
the server honours it (``Content-Range`` checked; otherwise the transfer starts again from byte 0).

The address guard runs twice: before a hop (a reason before robots.txt is even asked) and again inside the
connection itself, which resolves the host once, checks every answer and connects to the checked address (Host
header and TLS SNI still name the host). A DNS answer that changes between the two (rebinding) therefore meets
the guard at connect time and never reaches a refused address. ``resolver`` replaces DNS (tests, pinned hosts).

Concurrency is a thread pool with a per-host gate (a semaphore per host plus a minimum interval between request
starts), not asyncio: ``requests`` does the I/O, the SSRF and robots checks are synchronous, and with the few
native-language hosts of a crawl the per-host delay, not socket count, bounds throughput.
"""

from __future__ import annotations

import contextvars
import email.utils
import hashlib
import heapq
import http.client
import ipaddress
import itertools
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urljoin, urlsplit

import idna
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.connection import create_connection

from mella_assets.lib.watchdog import current_deadline

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DEFAULT_USER_AGENT = "MELLA/0.1 (+https://github.com/mella-project/mella)"
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 429 and the 5xx that mean "try later"; other errors are final.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK_BYTES = 64 * 1024
# Longer URLs are refused before any request: common servers stop at 8 KB request lines (nginx, Apache), and a
# URL this long is a tracking blob or an attack, not an image address.
MAX_URL_CHARS = 8192
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IMAGE_CONTENT_TYPES: tuple[str, ...] = ("image/", "application/octet-stream", "binary/octet-stream")
# "bytes <first>-<last>/<total or *>" of a 206 answer (ASCII digits only).
_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]+)-([0-9]+)/([0-9]+|\*)", re.IGNORECASE)
# Header numbers (Content-Length, Retry-After seconds): ASCII digits, and few enough of them to be a real value.
# str.isdigit() also says yes to "²", "١" or "৩", and int() then fails or reads another script's digits.
_HEADER_NUMBER = re.compile(r"[0-9]{1,18}")
# What the fetcher decodes itself (see the module docstring) and so asks for; and how many stacked encodings it
# undoes at most (``gzip, gzip`` is 2).
ACCEPT_ENCODING = "gzip, deflate"
MAX_CONTENT_ENCODINGS = 4
_GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
# host, port -> the IP addresses (as text) a connection may use, in preference order; raises OSError on failure.
Resolver = Callable[[str, int], Sequence[str]]


class RobotsChecker(Protocol):
    """What :class:`HttpFetcher` asks before each hop: :class:`~mella_assets.lib.robots.RobotsCache` (which imports
    this module, so it is not imported here)."""

    def verdict(self, url: str, fetcher: HttpFetcher) -> str | None:
        """None when ``url`` may be fetched, else the reason it may not (``robots_disallowed``, ...)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves ``host`` to (``getaddrinfo``), duplicates once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one fetch: ``body`` is set exactly when ``error_reason`` is None.

    ``headers``: the final response's headers (empty when no response came); ``attempts``: requests made for the
    final hop (more than one after retries).
    """

    url: str
    final_url: str
    status: int | None
    content_type: str | None
    body: bytes | None
    error_reason: str | None
    seconds: float
    headers: tuple[tuple[str, str], ...] = ()
    attempts: int = 0


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of one :meth:`HttpFetcher.download`: ``size`` and ``sha256`` describe the whole file exactly when
    ``error_reason`` is None. ``resumes``: ``Range`` requests sent to continue after a cut; ``restarts``: of
    those, the ones answered with the whole body (``Range`` ignored), written again from byte 0."""

    url: str
    final_url: str
    status: int | None
    size: int
    sha256: str | None
    error_reason: str | None
    seconds: float
    resumes: int = 0
    restarts: int = 0


class _Cut(Exception):
    """The body ended (or the connection dropped) before all of it came; ``timed_out`` when a read timed out."""

    def __init__(self, timed_out: bool = False) -> None:
        super().__init__("transfer cut")
        self.timed_out = timed_out


class _Sink:
    """The file a download writes into, with its byte count and running sha256."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.written = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.digest.update(chunk)
        self.written += len(chunk)

    def reset(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.written = 0
        self.digest = hashlib.sha256()


class _RequestDeadline:
    """When one fetch or download must be over (``at``, monotonic seconds), and the sockets it uses meanwhile.

    :data:`_WATCHDOG` calls :meth:`expire` at ``at``: every socket registered by then is shut down (both ways), so a
    read blocked in it returns at once, whatever it was reading (status line, headers, body, TLS). ``finish``
    ends the watch: from then on ``expire`` does nothing, so a socket back in the pool is never touched."""

    def __init__(self, at: float, outer: _RequestDeadline | None = None, stage_end: float | None = None) -> None:
        self.stage_end = stage_end  # the running stage's deadline: ``at`` never passes it
        self.at = at if stage_end is None else min(at, stage_end)
        self.outer = outer  # the fetch this one is nested in (robots.txt inside a fetch)
        self.expired = False
        self._finished = False
        self._paused_at: float | None = None  # monotonic time the clock stopped (queued for a host slot)
        self._lock = threading.Lock()
        self._owned: list[socket.socket] = []  # duplicates of new sockets: they outlive a TLS wrap's detach
        self._connections: list[HTTPConnection] = []  # pooled connections reused by this fetch

    def remaining(self) -> float:
        return self.at - (self._paused_at if self._paused_at is not None else time.monotonic())

    @property
    def reason(self) -> str:
        """Why a request this deadline ended did not finish: ``stage_deadline`` at the stage's end, else
        ``timeout`` (both retryable)."""
        return "stage_deadline" if self.stage_end is not None and self.at >= self.stage_end else "timeout"

    def pause(self) -> None:
        """Stop the clock (and the enclosing fetch's) while the request waits for a host slot."""
        deadline: _RequestDeadline | None = self
        while deadline is not None:
            with deadline._lock:
                if deadline._paused_at is None:
                    deadline._paused_at = time.monotonic()
            deadline = deadline.outer

    def resume(self) -> None:
        """Start the clock again: the deadline moves on by the time spent paused."""
        deadline: _RequestDeadline | None = self
        while deadline is not None:
            with deadline._lock:
                if deadline._paused_at is not None:
                    deadline.at += time.monotonic() - deadline._paused_at
                    if deadline.stage_end is not None:
                        deadline.at = min(deadline.at, deadline.stage_end)
                    deadline._paused_at = None
            deadline = deadline.outer

    def watch_socket(self, sock: socket.socket) -> None:
        """Watch a newly connected socket (through a duplicate of its descriptor, closed by :meth:`finish`)."""
        try:
            duplicate = sock.dup()
        except OSError:
            return
        with self._lock:
            if not self._finished:
                self._owned.append(duplicate)
                if not self.expired:
                    return
        if self.expired:
            _shutdown(duplicate)
        if self._finished:
            duplicate.close()

    def watch_connection(self, connection: HTTPConnection) -> None:
        with self._lock:
            if not self._finished:
                self._connections.append(connection)

    def expire(self) -> bool:
        """Shut the sockets down; False (nothing done) while paused or once the deadline has moved on."""
        with self._lock:
            if self._finished:
                return True
            if self._paused_at is not None or self.at > time.monotonic():
                return False
            self.expired = True
            sockets = [*self._owned, *(getattr(c, "sock", None) for c in self._connections)]
        for sock in sockets:
            if sock is not None:
                _shutdown(sock)
        return True

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            owned, self._owned, self._connections = self._owned, [], []
        for sock in owned:
            sock.close()


def _shutdown(sock: socket.socket) -> None:
    """Shut a socket down both ways (the plain socket call, also for a TLS socket: its descriptor is the same)."""
    try:
        if sock.fileno() != -1:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


# How often the watchdog looks again at a deadline whose clock is stopped.
_PAUSED_RECHECK_S = 0.05


class _Watchdog:
    """One daemon thread that expires :class:`_RequestDeadline` objects at their time (a heap of them; finished
    ones are dropped when their time comes)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _RequestDeadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: _RequestDeadline) -> None:
        with self._condition:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mella-http-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not deadline.expire():
                # Paused (queued for a host slot) or moved on: watched again later.
                with self._condition:
                    again = max(deadline.at, time.monotonic() + _PAUSED_RECHECK_S)
                    heapq.heappush(self._heap, (again, next(self._order), deadline))


_WATCHDOG = _Watchdog()
# The deadline of the fetch running in this thread (requests does its I/O in the calling thread), for the
# connection hooks; a nested fetch (robots.txt inside a fetch) installs its own and puts the outer one back.
_ACTIVE = threading.local()


def _active_deadline() -> _RequestDeadline | None:
    return getattr(_ACTIVE, "deadline", None)


@contextmanager
def _deadline(seconds: float) -> Iterator[_RequestDeadline]:
    """A deadline ``seconds`` from now (never later than the enclosing fetch's), armed and active in this thread."""
    outer = _active_deadline()
    at = time.monotonic() + seconds
    deadline = _RequestDeadline(min(at, outer.at) if outer is not None else at, outer, _stage_end())
    _WATCHDOG.arm(deadline)
    _ACTIVE.deadline = deadline
    try:
        yield deadline
    finally:
        _ACTIVE.deadline = outer
        deadline.finish()


class _Decoding:
    """One content coding undone incrementally (``gzip``: every member; ``deflate``: zlib, else raw), in pieces of at
    most ``_CHUNK_BYTES``, its total output capped at ``max_bytes`` (``too_large``)."""

    def __init__(self, coding: str, max_bytes: int, status: int | None) -> None:
        self.gzip = coding in _GZIP_CODINGS
        self.max_bytes = max_bytes
        self.status = status
        self.produced = 0
        self._raw = False  # deflate without its zlib wrapper (some servers send that)
        self._head = b""  # the first bytes of a deflate body, kept until it is known which kind it is
        self._done = False  # a gzip body's trailing garbage, or the end of a deflate stream: the rest is ignored
        self._member_output = False
        self._z = self._new()

    def _new(self) -> zlib._Decompress:
        self._member_output = False
        return zlib.decompressobj(
            16 + zlib.MAX_WBITS if self.gzip else -zlib.MAX_WBITS if self._raw else zlib.MAX_WBITS
        )

    def _decompress(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data, _CHUNK_BYTES)
        except zlib.error as error:
            if not self.gzip and not self._raw and not self.produced:
                # Not zlib-wrapped: start again as raw deflate from the first byte.
                self._raw = True
                self._z = self._new()
                return self._decompress(self._head + data)
            if self.gzip and not self._member_output and self.produced:
                self._done = True  # bytes after the last member that are no member: ignored, as browsers do
                return b""
            raise _Refused("content_decoding_error", self.status) from error
        if not self.gzip and not self._raw and len(self._head) < 64:
            self._head += data[:64]
        self._member_output = self._member_output or bool(out)
        self.produced += len(out)
        if self.produced > self.max_bytes:
            raise _Refused("too_large", self.status)
        return out

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            out = self._decompress(data)
            if self._done:
                return
            data = self._z.unconsumed_tail
            if out:
                yield out
            if self._z.eof:
                data = self._z.unused_data + data
                if not self.gzip:
                    self._done = True
                    return
                self._z = self._new()  # the next member, if any
                if not data:
                    return
            elif not data and len(out) < _CHUNK_BYTES:
                return

    def decode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield from self.feed(chunk)
        if not self._done:
            try:
                tail = self._z.flush()
            except zlib.error as error:
                raise _Refused("content_decoding_error", self.status) from error
            self.produced += len(tail)
            if self.produced > self.max_bytes:
                raise _Refused("too_large", self.status)
            if tail:
                yield tail


def content_codings(value: str | None) -> list[str]:
    """The codings of a ``Content-Encoding`` value in the order they were applied (``identity`` dropped)."""
    codings = [part.strip(" \t").lower() for part in (value or "").split(",")]
    return [coding for coding in codings if coding and coding != "identity"]


def decode_content(
    chunks: Iterable[bytes], content_encoding: str | None, max_bytes: int, status: int | None = None
) -> Iterator[bytes]:
    """The body of ``chunks`` with its ``Content-Encoding`` undone, last applied first; raises ``_Refused``
    (``unsupported_content_encoding``, ``content_decoding_error``, ``too_large``: any layer past ``max_bytes``)."""
    codings = content_codings(content_encoding)
    if len(codings) > MAX_CONTENT_ENCODINGS or any(c not in _GZIP_CODINGS and c != "deflate" for c in codings):
        raise _Refused("unsupported_content_encoding", status)
    stream: Iterable[bytes] = chunks
    for coding in reversed(codings):
        stream = _Decoding(coding, max_bytes, status).decode(stream)
    return iter(stream)


def is_blocked_address(ip: str) -> bool:
    """True for addresses a crawler must not reach: private, loopback, link-local, multicast, reserved,
    unspecified, cloud metadata, and anything not globally routable (also inside IPv4-mapped/NAT64/6to4)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and is_blocked_address(str(embedded)):
            return True
    return (
        address in _METADATA_ADDRESSES
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def header_number(value: str | None) -> int | None:
    """A non-negative integer header value (``Content-Length``, ``Retry-After`` seconds) in ASCII digits, or None
    when absent or malformed: a malformed value is ignored, never an error (the size cap and backoff still apply)."""
    if value is None:
        return None
    value = value.strip(" \t")
    return int(value) if _HEADER_NUMBER.fullmatch(value) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    seconds = header_number(value)
    if seconds is not None:
        return float(seconds)
    if not value.isascii():
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    try:
        return max(0.0, moment.timestamp() - (time.time() if now is None else now))
    except (ValueError, OverflowError, OSError):
        return None


def _stage_end() -> float | None:
    """When the running stage's deadline passes (monotonic seconds), or None outside a stage."""
    stage = current_deadline()
    return None if stage is None else stage.started + stage.seconds


def host_key(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit of politeness (robots.txt, concurrency, delay), itself a URL (the
    origin): an IPv6 literal keeps its brackets (``http://[::1]:8080``), a default port is written out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:  # only an IPv6 literal has a colon in its host (its zone, if any, stays percent-encoded)
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class HostLimiter:
    """At most ``max_per_host`` requests in flight per host and at least ``delay_s`` between request starts.

    ``defer(host, seconds)`` pushes the host's next start (Retry-After, robots Crawl-delay) for every thread.
    """

    def __init__(self, max_per_host: int = 2, delay_s: float = 0.0) -> None:
        self.max_per_host = max(1, max_per_host)
        self.delay_s = max(0.0, delay_s)
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}
        self._host_delay: dict[str, float] = {}
        self.granted: list[tuple[str, float]] = []  # (host, monotonic time) of every slot granted, for audits

    def set_delay(self, host: str, delay_s: float) -> None:
        """A longer delay for one host (robots.txt ``Crawl-delay``); never shorter than the default."""
        with self._lock:
            self._host_delay[host] = max(self.delay_s, delay_s)

    def defer(self, host: str, seconds: float) -> None:
        with self._lock:
            self._next_start[host] = max(self._next_start.get(host, 0.0), time.monotonic() + seconds)

    @contextmanager
    def slot(self, host: str, until: float | None = None, deadline: _RequestDeadline | None = None) -> Iterator[None]:
        """Hold one of the host's slots for a whole request, starting no sooner than its delay allows.

        ``until`` (monotonic seconds): the running stage's deadline; a slot not granted by then raises ``_Refused``
        (``stage_deadline``) instead of waiting on. ``deadline``: the request's, whose clock stops meanwhile."""
        with self._lock:
            semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(self.max_per_host))
        if deadline is not None:
            deadline.pause()
        try:
            self._wait_turn(host, semaphore, until)
        finally:
            if deadline is not None:
                deadline.resume()
        try:
            yield
        finally:
            semaphore.release()

    def _wait_turn(self, host: str, semaphore: threading.BoundedSemaphore, until: float | None) -> None:
        """Take one of ``semaphore``'s slots, then wait until the host's next start; refused past ``until``."""
        if not semaphore.acquire(timeout=None if until is None else max(0.0, until - time.monotonic())):
            raise _Refused("stage_deadline")
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    start = self._next_start.get(host, 0.0)
                    if now >= start:
                        self._next_start[host] = now + self._host_delay.get(host, self.delay_s)
                        self.granted.append((host, now))
                        return
                    wait = start - now
                if until is not None and now + wait > until:
                    raise _Refused("stage_deadline")
                time.sleep(wait)
        except BaseException:
            semaphore.release()
            raise


class _Refused(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _AddressGuard:
    """Resolves a host once, refuses it when any answer is blocked, and hands back the checked addresses."""

    def __init__(self, resolver: Resolver, allowed: Callable[[str], bool], allow_private: bool) -> None:
        self.resolver = resolver
        self.allowed = allowed
        self.allow_private = allow_private

    def addresses(self, host: str, port: int) -> list[str]:
        try:
            answers = list(self.resolver(host, port))
        except (OSError, UnicodeError) as error:
            raise _Refused("dns_error") from error
        if not answers:
            raise _Refused("dns_error")
        # Any blocked answer refuses the host: the connection could pick any of them.
        if not self.allow_private and not all(self.allowed(ip) for ip in answers):
            raise _Refused("blocked_address")
        return answers


def _guarded_connect(connection: HTTPConnection, guard: _AddressGuard) -> socket.socket:
    """``HTTPConnection._new_conn`` that connects only to addresses the guard checked in the same step.

    ``_Refused`` is not an error urllib3 or requests wrap, so it reaches :meth:`HttpFetcher.fetch` as itself."""
    last_error: OSError | None = None
    deadline = _active_deadline()
    for ip in guard.addresses(connection._dns_host, connection.port):
        timeout = connection.timeout
        if deadline is not None:
            if deadline.remaining() <= 0:
                raise ConnectTimeoutError(connection, f"Connection to {connection.host} ran past the fetch deadline")
            if isinstance(timeout, (int, float)):
                timeout = min(timeout, deadline.remaining())
        try:
            sock = create_connection(
                (ip, connection.port),
                timeout,
                source_address=connection.source_address,
                socket_options=connection.socket_options,
            )
        except TimeoutError as error:
            raise ConnectTimeoutError(
                connection, f"Connection to {connection.host} timed out. (connect timeout={connection.timeout})"
            ) from error
        except socket.gaierror as error:
            raise NameResolutionError(connection.host, connection, error) from error
        except OSError as error:
            last_error = error
            continue
        # The peer is the address that was checked; say so again in case the kernel routed elsewhere.
        peer = sock.getpeername()[0]
        if not guard.allow_private and not guard.allowed(str(peer)):
            sock.close()
            raise _Refused("blocked_address")
        if deadline is not None:
            # Watched from now on: the TLS handshake, the request and its answer all end at the deadline.
            deadline.watch_socket(sock)
        return sock
    raise NewConnectionError(connection, f"Failed to establish a new connection: {last_error}")


def _watched(connection: HTTPConnection) -> HTTPConnection:
    """A pooled connection handed to a request: watched by the running fetch's deadline (a kept-alive socket
    connected by an earlier fetch is not registered by :func:`_guarded_connect` again)."""
    deadline = _active_deadline()
    if deadline is not None:
        deadline.watch_connection(connection)
    return connection


def _guarded_adapter(guard: _AddressGuard) -> HTTPAdapter:
    """A requests adapter whose connections resolve and check their host through ``guard`` (no second lookup)."""

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_connect(self, guard)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _guarded_connect(self, guard)

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

        def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
            return _watched(super()._get_conn(timeout))

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

        def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
            return _watched(super()._get_conn(timeout))

    adapter = HTTPAdapter()
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": GuardedHTTPConnectionPool,
        "https": GuardedHTTPSConnectionPool,
    }
    return adapter


class HttpFetcher:
    """A polite, capped HTTP client; one ``requests.Session`` per thread.

    ``allowed_networks`` lists networks reachable although private (e.g. ``["127.0.0.1/32"]`` for a loopback
    test site); ``allow_private_addresses`` lifts the guard entirely (demo only). ``robots`` (a
    :class:`~mella_assets.lib.robots.RobotsCache`) is consulted on every hop when given. ``accept_content_types``
    (prefixes) refuses other media types before the body is read. ``resolver`` (host, port -> IP addresses)
    replaces DNS for both the pre-check and the connection.
    """

    def __init__(
        self,
        timeout_s: float = 10.0,
        max_bytes: int = 20_000_000,
        allow_private_addresses: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        total_timeout_s: float | None = None,
        *,
        allowed_networks: Sequence[str] = (),
        max_per_host: int = 2,
        delay_s: float = 0.0,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 60.0,
        robots: RobotsChecker | None = None,
        accept_content_types: Sequence[str] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.allow_private_addresses = allow_private_addresses
        self.allowed_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self.user_agent = user_agent
        # A per-read timeout alone lets a server drip one byte at a time forever.
        self.total_timeout_s = total_timeout_s if total_timeout_s is not None else 3 * timeout_s
        self.limiter = HostLimiter(max_per_host, delay_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.robots = robots
        self.accept_content_types = tuple(accept_content_types) if accept_content_types else None
        self.resolver: Resolver = resolver or system_resolver
        self._guard = _AddressGuard(self.resolver, self._address_allowed, allow_private_addresses)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            session.headers["Accept-Encoding"] = ACCEPT_ENCODING  # decoded by decode_content, not by urllib3
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            adapter = _guarded_adapter(self._guard)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _address_allowed(self, ip: str) -> bool:
        if not is_blocked_address(ip):
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    def check_url(self, url: str) -> None:
        """Raise ``_Refused`` for a URL that must not be requested (length, scheme, credentials, blocked address)."""
        if len(url) > MAX_URL_CHARS:
            raise _Refused("url_too_long")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise _Refused("invalid_url") from error
        if parts.scheme.lower() not in {"http", "https"}:
            raise _Refused("unsupported_scheme")
        if parts.username is not None or parts.password is not None:
            raise _Refused("url_has_credentials")
        if not parts.hostname:
            raise _Refused("invalid_url")
        try:
            # The name the connection will resolve: requests sends internationalised hosts in IDNA (punycode);
            # an ASCII name with a punycode label must decode to be a name at all.
            if parts.hostname.isascii():
                host = None
                if "xn--" in parts.hostname:
                    idna.decode(parts.hostname)
            else:
                host = idna.encode(parts.hostname, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as error:
            raise _Refused("invalid_url") from error
        if self.allow_private_addresses:
            return
        host = host or parts.hostname
        self._guard.addresses(host, port or (443 if parts.scheme.lower() == "https" else 80))

    # Kept for callers of the old private name.
    _check_url = check_url

    def _read_body(self, response: requests.Response, deadline: _RequestDeadline) -> bytes:
        status = response.status_code
        length = header_number(response.headers.get("Content-Length"))
        if length is not None and length > self.max_bytes:
            raise _Refused("too_large", status)
        chunks: list[bytes] = []
        total = 0
        raw = response.raw.stream(_CHUNK_BYTES, decode_content=False)
        # Counted after content decoding, so a gzip bomb hits the cap too (and each stacked layer has its own).
        for chunk in decode_content(raw, response.headers.get("Content-Encoding"), self.max_bytes, status):
            total += len(chunk)
            if total > self.max_bytes:
                raise _Refused("too_large", status)
            if deadline.expired or deadline.remaining() <= 0:
                raise _Refused("timeout", status)
            chunks.append(chunk)
        if deadline.expired:
            # The watchdog shut the socket: a body delimited by the connection's end looks complete but is cut.
            raise _Refused("timeout", status)
        return b"".join(chunks)

    def _timeouts(self, deadline: _RequestDeadline, status: int | None = None) -> tuple[float, float]:
        """(connect, read) timeouts of the next request: the per-read timeout, never past the deadline."""
        remaining = deadline.remaining()
        if remaining <= 0 or deadline.expired:
            raise _Refused("timeout", status)
        return min(self.timeout_s, remaining), min(self.timeout_s, remaining)

    @staticmethod
    def _queue_clock(deadline: _RequestDeadline, attempt: int) -> _RequestDeadline | None:
        """The deadline whose clock stops while a request waits for its host slot: a first attempt's. A retry's
        wait is the fetch's own (Retry-After, backoff), so its clock runs."""
        return deadline if attempt == 0 else None

    def _content_type_ok(self, content_type: str | None) -> bool:
        if self.accept_content_types is None:
            return True
        media = (content_type or "").split(";", 1)[0].strip().lower()
        # No Content-Type at all: let the decoder judge the bytes.
        return not media or media.startswith(self.accept_content_types)

    def _retry_wait(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the answer is final."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        return self.backoff_s * (2**attempt)

    def _request(
        self, url: str, deadline: _RequestDeadline, any_type: bool = False
    ) -> tuple[int, str | None, str | None, bytes | None, tuple[tuple[str, str], ...], int]:
        """One hop with retries: (status, content_type, location, body, headers, attempts). Body None = redirect."""
        host = host_key(url)
        # Built before taking the host's slot: a thread's first session costs time that must not eat the delay.
        session = self._session()
        attempt = 0
        while True:
            with (
                self.limiter.slot(host, _stage_end(), self._queue_clock(deadline, attempt)),
                session.get(url, stream=True, allow_redirects=False, timeout=self._timeouts(deadline)) as response,
            ):
                status = response.status_code
                content_type = response.headers.get("Content-Type")
                headers = tuple(response.headers.items())
                location = response.headers.get("Location")
                if status in _REDIRECT_STATUSES and location:
                    return status, content_type, location, None, headers, attempt + 1
                wait = self._retry_wait(response, attempt)
                if wait is None:
                    if not 200 <= status < 300:
                        raise _Refused(f"http_error_{status}", status)
                    if not any_type and not self._content_type_ok(content_type):
                        raise _Refused("unexpected_content_type", status)
                    return status, content_type, None, self._read_body(response, deadline), headers, attempt + 1
            if wait >= deadline.remaining():
                # No retry can start before the deadline: the answer in hand is the outcome.
                raise _Refused(f"http_error_{status}", status)
            # The wait applies to the whole host, not only to this thread.
            self.limiter.defer(host, wait)
            attempt += 1

    def fetch(self, url: str, *, check_robots: bool = True, any_content_type: bool = False) -> FetchResult:
        """GET ``url`` following up to 5 redirects, each hop checked (address, robots); never raises.

        ``check_robots=False`` / ``any_content_type=True`` serve the robots.txt fetch itself."""
        started = time.monotonic()
        current = url
        status: int | None = None
        content_type: str | None = None
        headers: tuple[tuple[str, str], ...] = ()
        attempts = 0
        # One deadline for the whole fetch (robots.txt, redirects and retries included), enforced on every read.
        with _deadline(self.total_timeout_s) as deadline:
            try:
                for _hop in range(MAX_REDIRECTS + 1):
                    self.check_url(current)
                    if check_robots and self.robots is not None:
                        verdict = self.robots.verdict(current, self)
                        if verdict is not None:
                            raise _Refused(verdict)
                    status, content_type, location, body, headers, attempts = self._request(
                        current, deadline, any_content_type
                    )
                    if body is None:
                        current = urljoin(current, location or "")
                        continue
                    return FetchResult(
                        url, current, status, content_type, body, None, time.monotonic() - started, headers, attempts
                    )
                raise _Refused("too_many_redirects", status)
            except _Refused as refused:
                # A refused redirect target keeps the status of the hop that pointed there.
                reason, status = refused.reason, refused.status if refused.status is not None else status
            except requests.Timeout:
                reason = "timeout"
            except requests.ConnectionError as error:
                # requests wraps a read timeout in the body stream as a ConnectionError.
                timed_out = any(isinstance(arg, ReadTimeoutError) for arg in error.args)
                reason = "timeout" if timed_out else "connection_error"
            except requests.RequestException:
                reason = "request_error"
            except ReadTimeoutError:
                reason = "timeout"
            except (DecodeError, HTTPError, http.client.HTTPException, OSError):
                # The body is read from urllib3 directly: its errors (a cut, a bad chunk) come unwrapped.
                reason = "connection_error"
            except (ValueError, UnicodeError):
                # urllib3 raises some URL parse errors (LocationParseError) unwrapped.
                reason = "invalid_url"
            if reason != "too_large" and (deadline.expired or (reason == "timeout" and deadline.remaining() <= 0)):
                # Whatever the shut socket looked like to the reader (a reset, a cut chunk, a bad status line).
                reason = deadline.reason
        return FetchResult(
            url, current, status, content_type, None, reason, time.monotonic() - started, headers, attempts
        )

    def download(self, url: str, path: Path, *, check_robots: bool = False) -> DownloadResult:
        """GET ``url`` into the file ``path`` (created or truncated) without holding the body in memory; never raises.

        Every hop is checked as in :meth:`fetch` (content type not checked). The body is written as sent (no
        content decoding, ``Accept-Encoding: identity``), so byte offsets are the server's. A connection that
        drops, or a body shorter than announced, is continued with ``Range: bytes=<written>-`` (redirects followed
        and checked again); an answer that is not the asked range starts the file again. Cuts without progress
        count against ``max_retries``. On failure the file holds a partial body: the caller removes it."""
        started = time.monotonic()
        status: int | None = None
        current = url
        resumes = restarts = failures = 0
        # One deadline for the whole transfer (resumes included), enforced on every read.
        with _deadline(self.total_timeout_s) as deadline:
            try:
                with open(path, "wb") as handle:
                    sink = _Sink(handle)
                    while True:
                        before = sink.written
                        try:
                            current, status, restarted = self._download_once(url, sink, deadline, check_robots)
                            restarts += restarted
                            return DownloadResult(
                                url, current, status, sink.written, sink.digest.hexdigest(), None,
                                time.monotonic() - started, resumes, restarts,
                            )  # fmt: skip
                        except _Cut as cut:
                            if deadline.expired or deadline.remaining() <= 0:
                                raise _Refused("timeout", status) from cut
                            failures = 0 if sink.written > before else failures + 1
                            if failures > self.max_retries:
                                raise _Refused("timeout" if cut.timed_out else "connection_error", status) from cut
                            if failures:
                                pause = self.backoff_s * (2 ** (failures - 1))
                                if pause >= deadline.remaining():
                                    raise _Refused("timeout", status) from cut
                                time.sleep(pause)
                            resumes += sink.written > 0
            except _Refused as refused:
                reason, status = refused.reason, refused.status if refused.status is not None else status
            except (ValueError, UnicodeError):
                reason = "invalid_url"
            except requests.RequestException:
                reason = "request_error"
            if deadline.expired or (reason == "timeout" and deadline.remaining() <= 0):
                reason = deadline.reason
        return DownloadResult(url, current, status, 0, None, reason, time.monotonic() - started, resumes, restarts)

    def _download_once(
        self, url: str, sink: _Sink, deadline: _RequestDeadline, check_robots: bool
    ) -> tuple[str, int, int]:
        """One transfer from ``sink.written`` on, following redirects: (final URL, status, restarts).

        Raises ``_Cut`` when the connection fails or the body ends short, ``_Refused`` for a final answer."""
        current = url
        status: int | None = None
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                self.check_url(current)
                if check_robots and self.robots is not None:
                    verdict = self.robots.verdict(current, self)
                    if verdict is not None:
                        raise _Refused(verdict)
            except _Refused as refused:
                # A refused redirect target keeps the status of the hop that pointed there.
                refused.status = refused.status if refused.status is not None else status
                raise
            host = host_key(current)
            session = self._session()
            attempt = 0
            while True:
                headers = {"Accept-Encoding": "identity"}
                if sink.written:
                    headers["Range"] = f"bytes={sink.written}-"
                try:
                    with (
                        self.limiter.slot(host, _stage_end(), self._queue_clock(deadline, attempt)),
                        session.get(
                            current,
                            headers=headers,
                            stream=True,
                            allow_redirects=False,
                            timeout=self._timeouts(deadline, status),
                        ) as response,
                    ):
                        status = response.status_code
                        location = response.headers.get("Location")
                        if status in _REDIRECT_STATUSES and location:
                            break
                        wait = self._retry_wait(response, attempt)
                        if wait is None:
                            if not 200 <= status < 300:
                                raise _Refused(f"http_error_{status}", status)
                            return current, status, self._stream_body(response, sink, deadline)
                except requests.Timeout as error:
                    raise _Cut(timed_out=True) from error
                except requests.ConnectionError as error:
                    raise _Cut(any(isinstance(arg, ReadTimeoutError) for arg in error.args)) from error
                except (HTTPError, http.client.HTTPException, OSError) as error:
                    raise _Cut() from error
                if wait >= deadline.remaining():
                    raise _Refused(f"http_error_{status}", status)
                self.limiter.defer(host, wait)
                attempt += 1
            current = urljoin(current, location or "")
        raise _Refused("too_many_redirects", status)

    def _stream_body(self, response: requests.Response, sink: _Sink, deadline: _RequestDeadline) -> int:
        """Append the body to ``sink`` (from byte 0 when the answer is not the asked range); returns 1 after such a
        restart, else 0. Raises ``_Cut`` when it ends before the announced length."""
        status = response.status_code
        restarted = 0
        expected: int | None
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != sink.written:
                # Not the bytes asked for: begin again without Range.
                sink.reset()
                raise _Cut()
            expected = None if match.group(3) == "*" else int(match.group(3))
        else:
            if sink.written:
                sink.reset()  # Range ignored: the whole body comes again
                restarted = 1
            expected = header_number(response.headers.get("Content-Length"))
        if expected is not None and expected > self.max_bytes:
            raise _Refused("too_large", status)
        try:
            for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
                if sink.written + len(chunk) > self.max_bytes:
                    raise _Refused("too_large", status)
                if deadline.expired or deadline.remaining() <= 0:
                    raise _Refused("timeout", status)
                sink.write(chunk)
        except ReadTimeoutError as error:
            raise _Cut(timed_out=True) from error
        except (HTTPError, http.client.HTTPException, OSError) as error:
            raise _Cut() from error
        if deadline.expired:
            raise _Refused("timeout", status)  # a body delimited by the connection's end, cut by the watchdog
        if expected is not None and sink.written < expected:
            raise _Cut()
        return restarted

    def fetch_many(self, urls: Sequence[str], max_workers: int = 8) -> list[FetchResult]:
        """Fetch in a thread pool (per-host limits still apply); results in the order of ``urls``."""
        if not urls:
            return []
        # Each fetch runs in a copy of the caller's context, so it sees the running stage's deadline.
        contexts = [contextvars.copy_context() for _ in urls]
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(urls)))) as pool:
            return list(pool.map(lambda context, url: context.run(self.fetch, url), contexts, urls))
