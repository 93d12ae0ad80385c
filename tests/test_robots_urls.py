"""robots.txt of every host form (issue #16): an IPv6 literal keeps its brackets (``http://[::1]:8080/robots.txt``;
without them every image on such a host ended ``robots_unavailable``), a default port is written out, and the
robots URL names the same host and port as the image URL."""

from __future__ import annotations

import ipaddress
import random
import socket
from urllib.parse import urlsplit

import pytest

from mella_assets.lib.http import HttpFetcher, host_key
from mella_assets.lib.robots import RobotsCache, robots_url
from support.scripted_site import Route, ScriptedSite

SEED = 16


def _hosts(rng: random.Random) -> list[str]:
    """Host forms as they appear in a URL: names, IDN, IPv4, IPv6 (compressed, exploded, IPv4-mapped, with a
    zone), generated from seeded random addresses."""
    hosts = ["example.com", "EXAMPLE.com", "www.example.co.uk.", "xn--80aa7be0a.test", "праха.test", "127.0.0.1"]
    hosts += ["[::1]", "[::]", "[fe80::1%25eth0]", "[::ffff:192.0.2.1]", "[2001:DB8::1]", "localhost"]
    for _ in range(20):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128))
        hosts += [str(v4), f"[{v6.compressed}]", f"[{v6.exploded}]", f"[{v6.exploded.upper()}]"]
    return hosts


def _urls() -> list[str]:
    rng = random.Random(SEED)
    urls = []
    for host in _hosts(rng):
        for scheme in ("http", "https", "HTTP"):
            for port in ("", ":8080", ":443", ":80", ":1"):
                for rest in ("/a.jpg", "/img/b.png?x=1#f", "", "/robots.txt", "/%2e%2e/c.jpg"):
                    userinfo = "user:pw@" if rng.random() < 0.1 else ""
                    urls.append(f"{scheme}://{userinfo}{host}{port}{rest}")
    return urls


URLS = _urls()


def test_the_robots_url_names_the_same_scheme_host_and_port_for_every_host_form():
    assert len(URLS) > 1500
    for url in URLS:
        parts = urlsplit(url)
        robots = urlsplit(robots_url(url))  # parses: no ValueError for an unbracketed IPv6 host
        scheme = parts.scheme.lower()
        assert robots.scheme == scheme, url
        assert robots.hostname == parts.hostname.lower(), url
        assert robots.port == (parts.port or (443 if scheme == "https" else 80)), url
        assert (robots.path, robots.query, robots.fragment, robots.username) == ("/robots.txt", "", "", None), url
        assert robots_url(robots_url(url)) == robots_url(url)


def test_host_key_brackets_ipv6_only():
    assert host_key("http://[::1]:8080/a") == "http://[::1]:8080"
    assert host_key("https://[2001:DB8::1]/a") == "https://[2001:db8::1]:443"
    assert host_key("http://[fe80::1%25eth0]/a") == "http://[fe80::1%25eth0]:80"
    assert host_key("http://Example.COM/a") == "http://example.com:80"
    assert host_key("http://127.0.0.1:81") == "http://127.0.0.1:81"


def _loopback_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _loopback_ipv6(), reason="this machine has no IPv6 loopback (::1)")
def test_images_on_an_ipv6_loopback_host_obey_its_robots_txt():
    routes = {
        "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
        "/a.jpg": Route(b"image", content_type="image/jpeg"),
        "/private/b.jpg": Route(b"secret", content_type="image/jpeg"),
    }
    with ScriptedSite(routes, host="::1") as site:
        assert site.base_url.startswith("http://[::1]:")
        fetcher = HttpFetcher(timeout_s=5, allowed_networks=["::1/128"], robots=RobotsCache(), max_retries=0)
        allowed = fetcher.fetch(f"{site.base_url}/a.jpg")
        refused = fetcher.fetch(f"{site.base_url}/private/b.jpg")
        again = fetcher.fetch(f"{site.base_url}/a.jpg")
    assert (allowed.error_reason, allowed.body, again.body) == (None, b"image", b"image")
    assert refused.error_reason == "robots_disallowed"
    assert site.paths() == ["/robots.txt", "/a.jpg", "/a.jpg"]
