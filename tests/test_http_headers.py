"""Numbers in HTTP headers (issue #16): ASCII digits only. ``str.isdigit()`` also accepts "²", "١" or "৩", and
``int()`` then fails (the fetch was recorded as ``invalid_url``, a permanent reject) or reads another script's
digits; a malformed ``Retry-After`` or ``Content-Length`` is now ignored: backoff and the size cap decide."""

from __future__ import annotations

import sys

import pytest

from mella_assets.lib.http import HttpFetcher, header_number, parse_retry_after
from support.scripted_site import Route, ScriptedSite

# Every character Python calls a digit or a number, but the ASCII digits.
UNICODE_DIGITS = [
    chr(code)
    for code in range(sys.maxunicode + 1)
    if (chr(code).isdigit() or chr(code).isnumeric()) and not "0" <= chr(code) <= "9"
]
# Those an HTTP header can carry: header bytes are read as Latin-1.
LATIN1_DIGITS = [digit for digit in UNICODE_DIGITS if ord(digit) < 256]


def test_every_unicode_digit_is_malformed_in_a_header_number():
    assert len(UNICODE_DIGITS) > 1500 and LATIN1_DIGITS == ["²", "³", "¹", "¼", "½", "¾"]
    for digit in UNICODE_DIGITS:
        for value in (digit, "1" + digit, digit + "0", f" {digit} ", digit * 3):
            assert header_number(value) is None, value
            assert parse_retry_after(value) is None, value


def test_ascii_header_numbers_parse_and_absurd_ones_are_ignored():
    assert [header_number(v) for v in ("0", " 42 ", "\t7", "007", "9" * 18)] == [0, 42, 7, 7, int("9" * 18)]
    assert [header_number(v) for v in (None, "", "-1", "+1", "1_000", "1.5", "0x10", "9" * 19, "1 2")] == [None] * 9
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=0) > 0
    assert parse_retry_after("Wed, 21 Oct 99999 07:28:00 GMT") is None


@pytest.fixture(scope="module")
def site():
    with ScriptedSite() as running:
        yield running


def _fetcher() -> HttpFetcher:
    return HttpFetcher(timeout_s=5, allowed_networks=["127.0.0.1/32"], max_retries=2, backoff_s=0.01)


@pytest.mark.parametrize("digit", LATIN1_DIGITS)
def test_a_retry_after_in_other_digits_backs_off_instead_of_a_permanent_reject(site, digit):
    path = f"/retry-{ord(digit)}.jpg"
    image = (200, (("Content-Type", "image/jpeg"),), b"image")
    site.routes[path] = Route(responses=((503, (("Retry-After", digit * 2),), b""), image))
    result = _fetcher().fetch(site.base_url + path)
    assert (result.error_reason, result.body, result.attempts) == (None, b"image", 2)


@pytest.mark.parametrize("digit", LATIN1_DIGITS)
def test_a_content_length_in_other_digits_is_ignored_and_the_cap_still_holds(site, digit):
    path = f"/length-{ord(digit)}.jpg"
    headers = (("Content-Type", "image/jpeg"), ("Content-Length", digit), ("Connection", "close"))
    site.routes[path] = Route(responses=((200, headers, b"image"),))
    assert _fetcher().fetch(site.base_url + path).body == b"image"
    capped = HttpFetcher(timeout_s=5, allowed_networks=["127.0.0.1/32"], max_bytes=3, max_retries=0)
    result = capped.fetch(site.base_url + path)
    assert result.error_reason == "too_large"


def test_a_download_with_a_malformed_content_length_completes(site, tmp_path):
    site.routes["/file.warc.gz"] = Route(
        responses=(
            (200, (("Content-Type", "application/gzip"), ("Content-Length", "³"), ("Connection", "close")), b"x" * 100),
        )
    )
    result = _fetcher().download(site.base_url + "/file.warc.gz", tmp_path / "file")
    assert (result.error_reason, result.size) == (None, 100)
