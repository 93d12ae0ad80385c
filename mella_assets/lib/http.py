"""Fetch URLs safely and politely: SSRF guard on every hop, robots.txt, per-host concurrency and delay, retries
with backoff on 429/5xx (honouring ``Retry-After``), manual redirects, size and time caps, a reason per failure.

Reason codes (stable): ``http_error_<status>``, ``timeout``, ``connection_error``, ``dns_error``,
``too_large``, ``blocked_address``, ``unsupported_scheme``, ``url_has_credentials``, ``invalid_url``,
``too_many_redirects``, ``url_too_long``, ``request_error``, ``robots_disallowed``, ``robots_unavailable``,
``unexpected_content_type``.

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

import email.utils
import hashlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
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
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.connection import create_connection

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
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of the host's slots for a whole request, starting no sooner than its delay allows."""
        with self._lock:
            semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(self.max_per_host))
        semaphore.acquire()
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    start = self._next_start.get(host, 0.0)
                    if now >= start:
                        self._next_start[host] = now + self._host_delay.get(host, self.delay_s)
                        self.granted.append((host, now))
                        break
                    wait = start - now
                time.sleep(wait)
            yield
        finally:
            semaphore.release()


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
    for ip in guard.addresses(connection._dns_host, connection.port):
        try:
            sock = create_connection(
                (ip, connection.port),
                connection.timeout,
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
        return sock
    raise NewConnectionError(connection, f"Failed to establish a new connection: {last_error}")


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

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

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

    def _read_body(self, response: requests.Response, started: float) -> bytes:
        length = header_number(response.headers.get("Content-Length"))
        if length is not None and length > self.max_bytes:
            raise _Refused("too_large", response.status_code)
        chunks: list[bytes] = []
        total = 0
        # Counted after content decoding, so a gzip bomb hits the cap too.
        for chunk in response.iter_content(_CHUNK_BYTES):
            total += len(chunk)
            if total > self.max_bytes:
                raise _Refused("too_large", response.status_code)
            if time.monotonic() - started > self.total_timeout_s:
                raise _Refused("timeout", response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

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
        self, url: str, started: float, any_type: bool = False
    ) -> tuple[int, str | None, str | None, bytes | None, tuple[tuple[str, str], ...], int]:
        """One hop with retries: (status, content_type, location, body, headers, attempts). Body None = redirect."""
        host = host_key(url)
        # Built before taking the host's slot: a thread's first session costs time that must not eat the delay.
        session = self._session()
        attempt = 0
        while True:
            with (
                self.limiter.slot(host),
                session.get(
                    url, stream=True, allow_redirects=False, timeout=(self.timeout_s, self.timeout_s)
                ) as response,
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
                    return status, content_type, None, self._read_body(response, started), headers, attempt + 1
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
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                self.check_url(current)
                if check_robots and self.robots is not None:
                    verdict = self.robots.verdict(current, self)
                    if verdict is not None:
                        raise _Refused(verdict)
                status, content_type, location, body, headers, attempts = self._request(
                    current, started, any_content_type
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
        except (ValueError, UnicodeError):
            # urllib3 raises some URL parse errors (LocationParseError) unwrapped.
            reason = "invalid_url"
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
        try:
            with open(path, "wb") as handle:
                sink = _Sink(handle)
                while True:
                    before = sink.written
                    try:
                        current, status, restarted = self._download_once(url, sink, started, check_robots)
                        restarts += restarted
                        return DownloadResult(
                            url, current, status, sink.written, sink.digest.hexdigest(), None,
                            time.monotonic() - started, resumes, restarts,
                        )  # fmt: skip
                    except _Cut as cut:
                        if time.monotonic() - started > self.total_timeout_s:
                            raise _Refused("timeout", status) from cut
                        failures = 0 if sink.written > before else failures + 1
                        if failures > self.max_retries:
                            raise _Refused("timeout" if cut.timed_out else "connection_error", status) from cut
                        if failures:
                            time.sleep(self.backoff_s * (2 ** (failures - 1)))
                        resumes += sink.written > 0
        except _Refused as refused:
            reason, status = refused.reason, refused.status if refused.status is not None else status
        except (ValueError, UnicodeError):
            reason = "invalid_url"
        except requests.RequestException:
            reason = "request_error"
        return DownloadResult(url, current, status, 0, None, reason, time.monotonic() - started, resumes, restarts)

    def _download_once(self, url: str, sink: _Sink, started: float, check_robots: bool) -> tuple[str, int, int]:
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
                        self.limiter.slot(host),
                        session.get(
                            current,
                            headers=headers,
                            stream=True,
                            allow_redirects=False,
                            timeout=(self.timeout_s, self.timeout_s),
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
                            return current, status, self._stream_body(response, sink, started)
                except requests.Timeout as error:
                    raise _Cut(timed_out=True) from error
                except requests.ConnectionError as error:
                    raise _Cut(any(isinstance(arg, ReadTimeoutError) for arg in error.args)) from error
                self.limiter.defer(host, wait)
                attempt += 1
            current = urljoin(current, location or "")
        raise _Refused("too_many_redirects", status)

    def _stream_body(self, response: requests.Response, sink: _Sink, started: float) -> int:
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
                if time.monotonic() - started > self.total_timeout_s:
                    raise _Refused("timeout", status)
                sink.write(chunk)
        except ReadTimeoutError as error:
            raise _Cut(timed_out=True) from error
        except (HTTPError, OSError) as error:
            raise _Cut() from error
        if expected is not None and sink.written < expected:
            raise _Cut()
        return restarted

    def fetch_many(self, urls: Sequence[str], max_workers: int = 8) -> list[FetchResult]:
        """Fetch in a thread pool (per-host limits still apply); results in the order of ``urls``."""
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(urls)))) as pool:
            return list(pool.map(self.fetch, urls))
