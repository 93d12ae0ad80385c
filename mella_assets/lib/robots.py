"""robots.txt for the crawler and the image fetcher, parsed with ``protego`` and cached per host.

Rules (as the major crawlers apply them): a 2xx robots.txt is obeyed; a 4xx one (none published) allows
everything; a 5xx answer or an unreachable host disallows everything for that host (reason
``robots_unavailable``), since the site may be overloaded. ``Crawl-delay`` raises the host's delay in the
fetcher's :class:`~mella_assets.lib.http.HostLimiter` (capped by ``max_crawl_delay_s``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protego import Protego

from mella_assets.lib.http import host_key

if TYPE_CHECKING:
    from mella_assets.lib.http import HttpFetcher

ROBOTS_MAX_BYTES = 512_000  # Google reads the first 500 KiB
DEFAULT_MAX_CRAWL_DELAY_S = 10.0


def robots_url(url: str) -> str:
    """The robots.txt that governs ``url``: ``/robots.txt`` on its scheme, host and port (:func:`host_key`, which
    keeps an IPv6 literal's brackets: ``http://[::1]:8080/robots.txt``)."""
    return f"{host_key(url)}/robots.txt"


@dataclass(frozen=True)
class RobotsRules:
    """One host's rules: ``parser`` None means allow all (``unavailable`` True: disallow all)."""

    parser: Protego | None
    unavailable: bool = False
    status: int | None = None


class RobotsCache:
    """Fetches each host's robots.txt once (through the same guarded fetcher) and answers per URL."""

    def __init__(self, user_agent_token: str = "MELLA", max_crawl_delay_s: float = DEFAULT_MAX_CRAWL_DELAY_S):
        self.user_agent_token = user_agent_token
        self.max_crawl_delay_s = max_crawl_delay_s
        self._rules: dict[str, RobotsRules] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def rules(self, url: str, fetcher: HttpFetcher) -> RobotsRules:
        """The rules of ``url``'s host, fetched on first use (one fetch per host even with many threads)."""
        host = host_key(url)
        with self._lock:
            host_lock = self._locks.setdefault(host, threading.Lock())
        with host_lock:
            if host in self._rules:
                return self._rules[host]
            result = fetcher.fetch(robots_url(url), check_robots=False, any_content_type=True)
            if result.body is not None:
                text = result.body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace")
                rules = RobotsRules(Protego.parse(text), status=result.status)
                delay = rules.parser.crawl_delay(self.user_agent_token)
                if delay:
                    fetcher.limiter.set_delay(host, min(float(delay), self.max_crawl_delay_s))
            elif result.status is not None and 400 <= result.status < 500:
                rules = RobotsRules(None, status=result.status)
            else:
                rules = RobotsRules(None, unavailable=True, status=result.status)
            self._rules[host] = rules
            return rules

    def verdict(self, url: str, fetcher: HttpFetcher) -> str | None:
        """None when ``url`` may be fetched, else ``robots_disallowed`` or ``robots_unavailable``."""
        rules = self.rules(url, fetcher)
        if rules.unavailable:
            return "robots_unavailable"
        if rules.parser is not None and not rules.parser.can_fetch(url, self.user_agent_token):
            return "robots_disallowed"
        return None
