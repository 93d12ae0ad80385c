"""The SSRF guard (issue #8): every private, loopback, link-local, metadata and otherwise non-public address form
is refused, directly, through DNS, and behind redirects, and not one connection reaches it.

Two witnesses, both real: a dual-stack listener on ``[::]:port`` that records every TCP connection to any local
address on its port (127.x, ::1, ::ffff:127.x, 0.0.0.0), and a ``sys.audit`` hook that records every
``socket.connect`` the process makes (for addresses no local listener can stand in for: 10/8, 169.254.169.254).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mella_assets.lib.http import HttpFetcher, is_blocked_address
from support.bad_inputs import EchoServer
from support.scripted_site import Route, ScriptedSite

# -- witnesses -----------------------------------------------------------------------------------------------
_CONNECTS: list[object] = []
_RECORDING = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and _RECORDING.is_set():
        _CONNECTS.append(args[1])


sys.addaudithook(_audit)  # cannot be removed; records nothing unless a test is inside connects_made()


@contextmanager
def connects_made() -> Iterator[list[object]]:
    """Every address this process tries to connect to inside the block."""
    _CONNECTS.clear()
    _RECORDING.set()
    try:
        yield _CONNECTS
    finally:
        _RECORDING.clear()


class Listener:
    """Accepts on ``[::]:port`` (IPv4 too: IPV6_V6ONLY off), answers ``200 ok`` and records each connection."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.peers.append(peer[0])
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                except OSError:
                    pass

    def connections(self) -> int:
        with self._lock:
            return len(self.peers)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


# -- the address forms ---------------------------------------------------------------------------------------
# Forms that land on this machine: were the guard to let them through, the listener would see the connection.
LOCAL_FORMS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",  # inet_aton shorthand
    "2130706433",  # 127.0.0.1 as one decimal number
    "0x7f.0.0.1",  # hexadecimal octet
    "0x7f000001",  # one hexadecimal number
    "0177.0.0.1",  # octal octet
    "017700000001",  # one octal number
    "0.0.0.0",
    "0",
    "localhost",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",  # IPv4-mapped, hex
    "[0:0:0:0:0:ffff:7f00:1]",
]
# Forms that cannot land here (no route), refused all the same: the audit hook shows no connect is tried.
REMOTE_FORMS = [
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.254",
    "169.254.169.254",  # cloud metadata
    "2852039166",  # 169.254.169.254 as one decimal number
    "0xa9.0xfe.0xa9.0xfe",  # 169.254.169.254 in hexadecimal octets
    "0251.0376.0251.0376",  # 169.254.169.254 in octal octets
    "100.64.0.1",  # carrier-grade NAT
    "198.18.0.1",  # benchmarking
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "[fe80::1]",  # link-local
    "[fc00::1]",  # unique local
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "[::ffff:169.254.169.254]",
    "[::ffff:a00:1]",  # IPv4-mapped 10.0.0.1
    "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2002:a9fe:a9fe::]",  # 6to4 of 169.254.169.254
    "[ff02::1]",  # IPv6 multicast
]
FORMS = LOCAL_FORMS + REMOTE_FORMS
# Names: a resolver stands in for DNS (the fetcher's ``resolver`` hook); every answer is checked.
NAMES = {
    "metadata.google.internal": ["169.254.169.254"],
    "internal.test": ["10.1.2.3"],
    "loopback.test": ["127.0.0.1"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],  # one bad answer refuses the host
    "v6-loopback.test": ["::1"],
}


def _resolver(host: str, port: int) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def test_at_least_twenty_address_forms_are_covered():
    assert len(set(FORMS)) == len(FORMS) >= 20
    assert len(FORMS) + len(NAMES) == 45


@pytest.mark.parametrize("form", FORMS)
def test_address_form_is_refused_without_a_connection(listener, form):
    before = listener.connections()
    with connects_made() as connects:
        result = HttpFetcher(timeout_s=2, max_retries=0).fetch(f"http://{form}:{listener.port}/latest/meta-data/")
    assert (result.error_reason, result.body, connects) == ("blocked_address", None, [])
    assert listener.connections() == before


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_name_resolving_to_a_refused_address_is_refused(listener, name):
    before = listener.connections()
    with connects_made() as connects:
        result = HttpFetcher(timeout_s=2, max_retries=0, resolver=_resolver).fetch(f"http://{name}:{listener.port}/")
    assert (result.error_reason, connects) == ("blocked_address", [])
    assert listener.connections() == before


def test_the_witnesses_see_a_connection_when_loopback_is_allowed(listener):
    """The control: lift the guard for loopback and the same forms reach the listener (so 0 above means 0)."""
    before = listener.connections()
    fetcher = HttpFetcher(timeout_s=2, max_retries=0, allowed_networks=["127.0.0.0/8", "::1/128"])
    reached = ["2130706433", "0x7f.0.0.1", "017700000001", "127.0.0.2", "[::1]", "localhost"]
    with connects_made() as connects:
        results = [fetcher.fetch(f"http://{form}:{listener.port}/") for form in reached]
    assert [(r.error_reason, r.body) for r in results] == [(None, b"ok")] * len(reached)
    assert listener.connections() - before == len(reached)
    assert len(connects) == len(reached)


def test_public_addresses_are_not_blocked():
    assert [is_blocked_address(ip) for ip in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111")] == [False] * 3
    assert is_blocked_address("not an address")


# -- redirects -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def origin(listener) -> Iterator[ScriptedSite]:
    """An allowed server (127.0.0.3) that redirects, with each redirect status, to every refused form."""
    routes = {
        f"/{status}/{index}": Route(status=status, headers=(("Location", f"http://{form}:{listener.port}/x"),))
        for status in (301, 302, 303, 307, 308)
        for index, form in enumerate(FORMS)
    }
    routes |= {
        f"/{status}/name/{name}": Route(status=status, headers=(("Location", f"http://{name}:{listener.port}/x"),))
        for status in (302, 307)
        for name in NAMES
    }
    with ScriptedSite(routes, host="127.0.0.3") as site:
        yield site


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_any_refused_form_is_refused_before_it_is_followed(listener, origin, status):
    before = listener.connections()
    fetcher = HttpFetcher(timeout_s=2, max_retries=0, allowed_networks=["127.0.0.3/32"], resolver=_resolver)
    with connects_made() as connects:
        results = [fetcher.fetch(f"{origin.base_url}/{status}/{index}") for index in range(len(FORMS))]
    assert [(r.error_reason, r.status) for r in results] == [("blocked_address", status)] * len(FORMS)
    # The only connections made went to the allowed origin.
    assert {address[0] for address in connects} == {"127.0.0.3"}
    assert listener.connections() == before


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_a_name_resolving_to_a_refused_address_is_refused(listener, origin, status):
    before = listener.connections()
    fetcher = HttpFetcher(timeout_s=2, max_retries=0, allowed_networks=["127.0.0.3/32"], resolver=_resolver)
    results = [fetcher.fetch(f"{origin.base_url}/{status}/name/{name}") for name in NAMES]
    assert [r.error_reason for r in results] == ["blocked_address"] * len(NAMES)
    assert listener.connections() == before


# -- DNS rebinding -------------------------------------------------------------------------------------------
class Rebinding:
    """A resolver whose first answer is harmless and every later answer is the attacker's target."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return [self.answers[min(len(self.calls), 2) - 1]]


def test_dns_rebinding_between_the_check_and_the_connection_is_refused(listener):
    before = listener.connections()
    resolver = Rebinding(first="93.184.216.34", then="127.0.0.1")
    with connects_made() as connects:
        result = HttpFetcher(timeout_s=2, max_retries=0, resolver=resolver).fetch(
            f"http://rebind.test:{listener.port}/latest/meta-data/"
        )
    # Checked before the hop (public: passes), resolved again inside the connection (loopback: refused there).
    assert (result.error_reason, resolver.calls, connects) == ("blocked_address", ["rebind.test"] * 2, [])
    assert listener.connections() == before


def test_rebinding_from_an_allowed_address_to_a_refused_one_is_refused(listener):
    before = listener.connections()
    resolver = Rebinding(first="127.0.0.3", then="127.0.0.2")
    fetcher = HttpFetcher(timeout_s=2, max_retries=0, allowed_networks=["127.0.0.3/32"], resolver=resolver)
    with connects_made() as connects:
        result = fetcher.fetch(f"http://rebind.test:{listener.port}/")
    assert (result.error_reason, connects) == ("blocked_address", [])
    assert listener.connections() == before


def test_the_connection_goes_to_the_checked_address_with_the_host_name_kept():
    calls: list[str] = []

    def pinned(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with EchoServer() as echo:
        fetcher = HttpFetcher(timeout_s=2, max_retries=0, allowed_networks=["127.0.0.1/32"], resolver=pinned)
        with connects_made() as connects:
            result = fetcher.fetch(f"http://images.example.test:{echo.port}/a.jpg")
    assert result.error_reason is None
    assert result.body.decode() == f"/a.jpg\nimages.example.test:{echo.port}"  # Host header: the name
    assert connects == [("127.0.0.1", echo.port)]  # the socket: the checked address, no other lookup
    assert calls == ["images.example.test"] * 2


def test_dns_rebinding_is_refused_for_https_too(listener):
    before = listener.connections()
    resolver = Rebinding(first="93.184.216.34", then="::1")
    with connects_made() as connects:
        result = HttpFetcher(timeout_s=2, max_retries=0, resolver=resolver).fetch(
            f"https://rebind.test:{listener.port}/"
        )
    assert (result.error_reason, len(resolver.calls), connects) == ("blocked_address", 2, [])
    assert listener.connections() == before
