"""A small loopback HTTP server for the demo site: the image fetcher and crawler tests download from it."""

from __future__ import annotations

import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONTENT_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",  # also for the demo's fake image (HTML bytes at an image path), as real servers do
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}
HOST = "127.0.0.1"


def is_demo_lake(lake_root: str) -> bool:
    """True when ``lake_root`` holds the demo's web site (``demo/site/``, written by `mella demo`): the only lake
    the demo's resources (a fetcher that may reach the loopback site) are ever used on."""
    from mella_assets.lib.lake import LakeStore

    site = LakeStore(lake_root).direct_path("demo/site")
    return site is not None and site.is_dir()


class _Handler(BaseHTTPRequestHandler):
    server: _SiteHTTPServer
    server_version = "mella-demo-site/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests and the demo do not want one line per request."""

    def _resolve(self) -> Path | None:
        """The file a request path names, or None (missing, a folder, hidden, or an attempt to leave the root)."""
        parts = unquote(urlsplit(self.path).path).split("/")
        if any(part in {"..", "."} or part.startswith(".") or "\\" in part or "\x00" in part for part in parts):
            return None
        relative = [part for part in parts if part]
        if not relative:
            return None
        path = self.server.root.joinpath(*relative).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            return None
        return path

    def _respond(self, send_body: bool) -> None:
        path = self._resolve()
        if path is None:
            body = b"Not Found\n"
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        else:
            body = path.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)


class _SiteHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root).resolve()
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up early (the fetcher stops reading at its size cap or content-type check) is normal
        here; anything else is still printed."""
        if not isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            super().handle_error(request, client_address)


class DemoSiteServer:
    """Serves the files under ``site_dir`` on ``127.0.0.1:port`` (0 picks a free port) from a daemon thread."""

    def __init__(self, site_dir: Path, port: int = 0) -> None:
        self.site_dir = Path(site_dir)
        self.requested_port = port
        self._server: _SiteHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the demo site server is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> DemoSiteServer:
        """Bind and serve in the background; returns self. Starting twice is a no-op."""
        if self._server is None:
            self._server = _SiteHTTPServer(self.site_dir, self.requested_port)
            self._thread = threading.Thread(
                target=self._server.serve_forever, name=f"demo-site-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None

    def __enter__(self) -> DemoSiteServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_SERVERS: dict[int, DemoSiteServer] = {}
_SERVERS_LOCK = threading.Lock()


def port_is_served(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def ensure_demo_site_server(site_dir: Path, port: int) -> DemoSiteServer | None:
    """This process's server on ``port``, started on first call; None when another process already serves it.

    The server started here is kept in a module-level registry, so a process starts at most one per port (a
    second call with another ``site_dir`` returns the running one unchanged).
    """
    with _SERVERS_LOCK:
        server = _SERVERS.get(port)
        if server is not None and server._server is not None:
            return server
        if port_is_served(port):
            return None
        try:
            server = DemoSiteServer(site_dir, port).start()
        except OSError:
            # Lost a race with another process binding the same port: it serves the site.
            return None
        _SERVERS[port] = server
        return server
