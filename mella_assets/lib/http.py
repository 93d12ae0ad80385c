"""Fetch URLs safely: SSRF guard on every hop, manual redirects, size and time caps, a reason per failure.

Reason codes (stable): ``http_error_<status>``, ``timeout``, ``connection_error``, ``dns_error``,
``too_large``, ``blocked_address``, ``unsupported_scheme``, ``url_has_credentials``, ``invalid_url``,
``too_many_redirects``, ``request_error``.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

DEFAULT_USER_AGENT = "MELLA/0.1 (+https://github.com/mella-project/mella)"
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one fetch: ``body`` is set exactly when ``error_reason`` is None."""

    url: str
    final_url: str
    status: int | None
    content_type: str | None
    body: bytes | None
    error_reason: str | None
    seconds: float


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


class _Refused(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class HttpFetcher:
    """A polite, capped HTTP client; one ``requests.Session`` per thread."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        max_bytes: int = 20_000_000,
        allow_private_addresses: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        total_timeout_s: float | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.allow_private_addresses = allow_private_addresses
        self.user_agent = user_agent
        # A per-read timeout alone lets a server drip one byte at a time forever.
        self.total_timeout_s = total_timeout_s if total_timeout_s is not None else 3 * timeout_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            self._local.session = session
        return session

    def _check_url(self, url: str) -> None:
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
        if self.allow_private_addresses:
            return
        port = port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as error:
            raise _Refused("dns_error") from error
        # Any blocked answer refuses the host: the connection could pick any of them.
        if not infos or any(is_blocked_address(str(info[4][0])) for info in infos):
            raise _Refused("blocked_address")

    def _read_body(self, response: requests.Response, started: float) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
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

    def fetch(self, url: str) -> FetchResult:
        """GET ``url`` following up to 5 redirects, each hop checked; never raises."""
        started = time.monotonic()
        current = url
        status: int | None = None
        content_type: str | None = None
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                self._check_url(current)
                with self._session().get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=(self.timeout_s, self.timeout_s),
                ) as response:
                    status = response.status_code
                    content_type = response.headers.get("Content-Type")
                    location = response.headers.get("Location")
                    if status in _REDIRECT_STATUSES and location:
                        current = urljoin(current, location)
                        continue
                    if not 200 <= status < 300:
                        raise _Refused(f"http_error_{status}", status)
                    body = self._read_body(response, started)
                return FetchResult(url, current, status, content_type, body, None, time.monotonic() - started)
            raise _Refused("too_many_redirects", status)
        except _Refused as refused:
            reason, status = refused.reason, refused.status
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
        return FetchResult(url, current, status, content_type, None, reason, time.monotonic() - started)

    def fetch_many(self, urls: Sequence[str], max_workers: int = 8) -> list[FetchResult]:
        """Fetch in a thread pool; results in the order of ``urls``."""
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(urls)))) as pool:
            return list(pool.map(self.fetch, urls))
