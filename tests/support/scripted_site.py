"""A scripted loopback site with a request log, for the fetcher, crawler and SSRF tests: each path answers what its
:class:`Route` says, and every request is logged."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from mella_assets.demo.site import HOST


@dataclass
class Route:
    """What a :class:`ScriptedSite` answers for one path.

    ``responses`` (optional) overrides status/headers/body per request: the n-th request to the path gets the
    n-th entry, the last one repeats (e.g. a 429 first, then the image). ``delay_s`` sleeps before answering.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    responses: tuple[tuple[int, tuple[tuple[str, str], ...], bytes], ...] = ()


@dataclass
class LoggedRequest:
    """One request the site received: path, start and end (monotonic seconds; end None while it runs),
    User-Agent, server host. Logged when the request arrives, so a client never sees an answer first."""

    path: str
    started: float
    user_agent: str
    host: str
    ended: float | None = None


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: _ScriptedHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the site keeps its own log."""

    def do_GET(self) -> None:
        site = self.server.site
        started = time.monotonic()
        path = urlsplit(self.path).path
        route = site.routes.get(path) or site.routes.get(self.path)
        entry = LoggedRequest(
            path=self.path,
            started=started,
            user_agent=self.headers.get("User-Agent", ""),
            host=self.server.server_address[0],
        )
        with site.lock:
            count = site.hits.get(path, 0)
            site.hits[path] = count + 1
            site.log.append(entry)
        try:
            if route is None:
                status, headers, body = 404, (("Content-Type", "text/plain"),), b"not found"
            else:
                if route.delay_s:
                    time.sleep(route.delay_s)
                if route.responses:
                    status, headers, body = route.responses[min(count, len(route.responses) - 1)]
                else:
                    status = route.status
                    headers = (("Content-Type", route.content_type), *route.headers)
                    body = route.body
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The client stopped reading (a size cap): that is its right.
                self.close_connection = True
        finally:
            entry.ended = time.monotonic()


class _ScriptedHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, site: ScriptedSite, host: str, port: int) -> None:
        self.site = site
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _ScriptedHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: clients that hang up early (size caps, timeouts) are part of what the tests exercise."""


class ScriptedSite:
    """A loopback HTTP server that answers from ``routes`` (path -> :class:`Route`) and logs every request.

    ``host`` may be any loopback address (127.0.0.2 ... on Linux), so a test can run two "hosts", or ``::1`` (the
    base URL then has the address in brackets: ``http://[::1]:port``).
    """

    def __init__(self, routes: dict[str, Route] | None = None, host: str = HOST) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.host = host
        self.log: list[LoggedRequest] = []
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server: _ScriptedHTTPServer | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>`` (still answered after stop, for assertions on URLs)."""
        if self._base_url is None:
            raise RuntimeError("the scripted site has not been started")
        return self._base_url

    def paths(self) -> list[str]:
        """Requested paths, in arrival order."""
        with self.lock:
            return [entry.path for entry in sorted(self.log, key=lambda e: e.started)]

    def start(self) -> ScriptedSite:
        if self._server is None:
            self._server = _ScriptedHTTPServer(self, self.host, 0)
            host = f"[{self.host}]" if ":" in self.host else self.host
            self._base_url = f"http://{host}:{self._server.server_address[1]}"
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedSite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
