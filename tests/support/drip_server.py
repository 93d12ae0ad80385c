"""A loopback HTTP server that answers slowly on purpose, for the fetch deadline tests: each path is a drip pattern
that keeps a connection busy without ever going silent for a whole read timeout (a byte every ``interval_s``), so
only a wall-clock deadline per request can end it. A connection is dropped after ``max_s`` at the latest, so a
client without that deadline still ends (and a measurement of it says ``>= max_s``).

Patterns (the path without its leading slash):

- ``status_line``: the status line, one byte at a time;
- ``headers``: the status line at once, then an endless header value, one byte at a time;
- ``body``: headers with a large ``Content-Length``, then the body one byte at a time;
- ``body_until_close``: no length (body delimited by the connection close), one byte at a time;
- ``chunked``: ``Transfer-Encoding: chunked``, one-byte chunks, each chunk a byte at a time;
- ``silent``: reads the request, answers nothing (bounded by the per-read timeout alone before);
- ``retry_after``: ``503`` with ``Retry-After`` (seconds in the query, default 4) on every request;
- ``ok``: a small image answer at once (``?bytes=N`` of ``image/png``-typed bytes).
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

from mella_assets.demo.site import HOST

DRIP_PATTERNS = ("status_line", "headers", "body", "body_until_close", "chunked", "silent", "retry_after")


class DripServer:
    """``with DripServer(interval_s=0.2) as server: fetch(server.url("headers"))``; ``bodies`` maps a path to the
    bytes the ``ok`` pattern serves for it (``image/png``)."""

    def __init__(self, interval_s: float = 0.2, max_s: float = 15.0, host: str = HOST) -> None:
        self.interval_s = interval_s
        self.max_s = max_s
        self.host = host
        self.bodies: dict[str, bytes] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> DripServer:
        self._listener = socket.create_server((self.host, 0), backlog=64)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, name="drip-accept", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()  # type: ignore[union-attr]
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        started = time.monotonic()
        connection.settimeout(self.max_s)
        try:
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = connection.recv(4096)
                    if not data:
                        return
                    request += data
                target = request.split(b" ", 2)[1].decode("latin-1")
                with self._lock:
                    self.requests.append(target)
                parts = urlsplit(target)
                pattern = parts.path.lstrip("/")
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                self._answer(connection, pattern, query, started)
        except OSError:
            return  # the client hung up (its deadline): that is what the tests want

    def _drip(self, connection: socket.socket, data: bytes, started: float) -> None:
        for i in range(len(data)):
            if self._stop.is_set() or time.monotonic() - started > self.max_s:
                raise OSError("drip ended")
            connection.sendall(data[i : i + 1])
            time.sleep(self.interval_s)

    def _drip_forever(self, connection: socket.socket, unit: bytes, started: float) -> None:
        while True:
            self._drip(connection, unit, started)

    def _answer(self, connection: socket.socket, pattern: str, query: dict[str, str], started: float) -> None:
        if pattern == "status_line":
            self._drip(connection, b"HTTP/1.1 200 OK\r\n", started)
            self._drip_forever(connection, b"X", started)
        elif pattern == "headers":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: ")
            self._drip_forever(connection, b"a", started)
        elif pattern == "body":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
            self._drip_forever(connection, b"\x00", started)
        elif pattern == "body_until_close":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
            self._drip_forever(connection, b"\x00", started)
        elif pattern == "chunked":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
            self._drip_forever(connection, b"1\r\nx\r\n", started)
        elif pattern == "silent":
            self._stop.wait(self.max_s)
        elif pattern == "retry_after":
            seconds = query.get("s", "4")
            connection.sendall(
                f"HTTP/1.1 503 Service Unavailable\r\nRetry-After: {seconds}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        else:  # ok
            body = self.bodies.get(pattern, b"\x89PNG\r\n\x1a\n" + b"\x00" * int(query.get("bytes", "100")))
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
