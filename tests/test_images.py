"""Image fetching and validation: fetch safely, decode bytes only, refuse bombs and junk, re-encode, hash."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageDraw

from mella_assets.know.images import (
    ImageReject,
    ValidatedImage,
    dhash,
    hamming,
    image_key,
    validate_image,
)
from mella_assets.lib.http import DEFAULT_USER_AGENT, FetchResult, HttpFetcher, is_blocked_address


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def scene(width: int = 320, height: int = 240, variant: int = 0) -> Image.Image:
    """A deterministic picture with structure (shapes of different brightness)."""
    image = Image.new("RGB", (width, height), (30, 60, 90) if variant == 0 else (220, 210, 40))
    draw = ImageDraw.Draw(image)
    sx, sy = width / 320, height / 240
    if variant == 0:
        draw.ellipse((40 * sx, 30 * sy, 160 * sx, 150 * sy), fill=(250, 240, 200))
        draw.rectangle((190 * sx, 100 * sy, 300 * sx, 220 * sy), fill=(120, 20, 20))
        draw.polygon([(20 * sx, 230 * sy), (120 * sx, 170 * sy), (170 * sx, 235 * sy)], fill=(10, 200, 80))
    else:
        draw.rectangle((0, 0, 110 * sx, 240 * sy), fill=(0, 0, 0))
        draw.ellipse((180 * sx, 20 * sy, 310 * sx, 120 * sy), fill=(20, 20, 160))
        draw.line((0, 200 * sy, 320 * sx, 180 * sy), fill=(255, 255, 255), width=int(12 * sy))
    return image


def decoded(result: ValidatedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    assert (image.format, image.mode) == ("JPEG", "RGB")
    return image


@pytest.mark.parametrize(
    ("name", "data", "fmt", "mode_in"),
    [
        ("jpeg", encode(scene(), "JPEG"), "JPEG", "RGB"),
        ("png_alpha", encode(scene().convert("RGBA"), "PNG"), "PNG", "RGBA"),
        ("cmyk", encode(scene().convert("CMYK"), "JPEG"), "JPEG", "CMYK"),
        ("gif_palette", encode(scene().convert("P"), "GIF"), "GIF", "P"),
        ("grey_16bit", encode(Image.new("I;16", (320, 240), 40000), "PNG"), "PNG", "I;16"),
    ],
)
def test_common_image_kinds_validate_and_reencode_to_rgb_jpeg(name: str, data: bytes, fmt: str, mode_in: str) -> None:
    result = validate_image(data)

    assert isinstance(result, ValidatedImage), name
    assert (result.format, result.mode_in, result.width, result.height) == (fmt, mode_in, 320, 240)
    assert (result.ext, result.bytes_in) == ("jpg", len(data))
    assert decoded(result).size == (320, 240)
    assert len(result.sha256) == 64 and len(result.phash) == 16


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white() -> None:
    result = validate_image(encode(Image.new("I;16", (100, 100), 40000), "PNG"))

    assert isinstance(result, ValidatedImage)
    assert decoded(result).getpixel((50, 50)) == (156, 156, 156)  # 40000 / 256


def test_transparent_pixels_are_composited_on_white() -> None:
    result = validate_image(encode(Image.new("RGBA", (100, 100), (255, 0, 0, 0)), "PNG"))

    assert isinstance(result, ValidatedImage)
    assert decoded(result).getpixel((50, 50)) == (255, 255, 255)


def test_one_pixel_gif_is_too_small() -> None:
    assert validate_image(encode(Image.new("P", (1, 1)), "GIF")) == ImageReject("too_small", "1x1 < 64")


def test_thin_banner_is_too_small_by_its_short_side() -> None:
    assert validate_image(encode(Image.new("RGB", (800, 40)), "PNG")) == ImageReject("too_small", "800x40 < 64")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is patched to declare another size (CRC fixed)."""
    data = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_png_declaring_fifty_thousand_squared_pixels_is_a_pixel_bomb() -> None:
    result = validate_image(png_declaring(50_000, 50_000))

    assert isinstance(result, ImageReject)
    assert result.reason == "pixel_bomb"


def test_pixel_cap_is_checked_from_the_header_before_decoding() -> None:
    # 8000 x 6000 = 48 M pixels: over our cap, under Pillow's own bomb limit; the data could not even decode.
    assert validate_image(png_declaring(8000, 6000)) == ImageReject("pixel_bomb", "8000x6000 > 40000000 pixels")


def test_html_bytes_are_not_decodable() -> None:
    assert validate_image(b"<!doctype html><html><body>404</body></html>") == ImageReject(
        "not_decodable", "unknown image format"
    )


def test_truncated_jpeg_is_not_decodable() -> None:
    data = encode(scene(), "JPEG")

    result = validate_image(data[: len(data) // 2])

    assert isinstance(result, ImageReject)
    assert result.reason == "not_decodable"


def test_exif_orientation_is_applied_so_width_and_height_swap() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encode(scene(320, 240), "JPEG", exif=exif)

    result = validate_image(data)

    assert isinstance(result, ValidatedImage)
    assert (result.width, result.height) == (240, 320)
    assert "exif" not in Image.open(io.BytesIO(result.data)).info


def test_large_image_is_downscaled_to_the_longest_side() -> None:
    result = validate_image(encode(scene(2048, 1024), "PNG"), max_side_out=1024)

    assert isinstance(result, ValidatedImage)
    assert (result.width, result.height, result.width_in, result.height_in) == (1024, 512, 2048, 1024)


def test_same_bytes_give_the_same_sha256_and_key() -> None:
    data = encode(scene(), "PNG")
    first, second = validate_image(data), validate_image(data)

    assert isinstance(first, ValidatedImage) and isinstance(second, ValidatedImage)
    assert first.sha256 == second.sha256
    assert image_key(first.sha256, first.ext) == f"images/{first.sha256[:2]}/{first.sha256}.jpg"


def test_image_key_refuses_anything_but_a_hex_digest() -> None:
    with pytest.raises(ValueError):
        image_key("../../etc/passwd", "jpg")
    with pytest.raises(ValueError):
        image_key("a" * 64, "jpg/../x")


def test_resized_reencode_is_a_near_duplicate_and_another_picture_is_not() -> None:
    original = scene(320, 240)
    resized = Image.open(io.BytesIO(encode(original.resize((160, 120), Image.Resampling.BILINEAR), "JPEG")))
    other = scene(320, 240, variant=1)

    assert hamming(dhash(original), dhash(resized)) <= 6
    assert hamming(dhash(original), dhash(other)) > 10


def test_dhash_is_sixteen_hex_digits_and_hamming_counts_bits() -> None:
    assert dhash(Image.new("L", (64, 64), 128)) == "0000000000000000"
    assert hamming("0000000000000000", "000000000000000f") == 4
    assert hamming("ffffffffffffffff", "0000000000000000") == 64


# -- fetching (lib/http.py) ----------------------------------------------------------------------------------
# The fetcher tests live here because the fetcher feeds validate_image; one loopback server serves them all.

PNG_BYTES = encode(scene(), "PNG")
BIG_BYTES = b"x" * 5000


class _Handler(BaseHTTPRequestHandler):
    seen_user_agents: list[str] = []  # noqa: RUF012 - shared on purpose, read by one test

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain", length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen_user_agents.append(self.headers.get("User-Agent", ""))
        if self.path == "/castle.png":
            self._send(200, PNG_BYTES, "image/png")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/castle.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":
            self._send(200, BIG_BYTES, "image/jpeg")
        elif self.path == "/big-unannounced":
            # No Content-Length: only counting the streamed bytes finds the size.
            self.close_connection = True
            self._send(200, BIG_BYTES, "image/jpeg", length=False)
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("ip", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("192.168.1.10", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),
        ("64:ff9b::a00:1", True),
        ("not-an-ip", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_is_blocked_address(ip: str, blocked: bool) -> None:
    assert is_blocked_address(ip) is blocked


def test_loopback_url_is_refused_by_default(server: str) -> None:
    result = HttpFetcher().fetch(f"{server}/castle.png")

    assert (result.error_reason, result.status, result.body) == ("blocked_address", None, None)


def test_png_is_fetched_with_our_user_agent_when_private_addresses_are_allowed(server: str) -> None:
    result = HttpFetcher(allow_private_addresses=True).fetch(f"{server}/castle.png")

    assert (result.error_reason, result.status, result.content_type) == (None, 200, "image/png")
    assert result.body == PNG_BYTES
    assert _Handler.seen_user_agents[-1] == DEFAULT_USER_AGENT
    assert isinstance(validate_image(result.body), ValidatedImage)


def test_missing_url_gives_http_error_404(server: str) -> None:
    result = HttpFetcher(allow_private_addresses=True).fetch(f"{server}/nope")

    assert (result.error_reason, result.status, result.body) == ("http_error_404", 404, None)


def test_redirect_is_followed_and_final_url_recorded(server: str) -> None:
    result = HttpFetcher(allow_private_addresses=True).fetch(f"{server}/redirect")

    assert (result.error_reason, result.final_url, result.body) == (None, f"{server}/castle.png", PNG_BYTES)


def test_endless_redirects_stop_after_five_hops(server: str) -> None:
    result = HttpFetcher(allow_private_addresses=True).fetch(f"{server}/loop")

    assert (result.error_reason, result.status) == ("too_many_redirects", 301)


def test_redirect_to_another_scheme_is_refused_on_that_hop(server: str) -> None:
    result = HttpFetcher(allow_private_addresses=True).fetch(f"{server}/to-file")

    assert (result.error_reason, result.final_url) == ("unsupported_scheme", "file:///etc/passwd")


@pytest.mark.parametrize("path", ["/big", "/big-unannounced"])
def test_body_over_the_cap_is_too_large(server: str, path: str) -> None:
    result = HttpFetcher(max_bytes=1000, allow_private_addresses=True).fetch(f"{server}{path}")

    assert (result.error_reason, result.status, result.body) == ("too_large", 200, None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.cz/a.jpg", "unsupported_scheme"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("http://user:secret@example.cz/a.jpg", "url_has_credentials"),
        ("http:///a.jpg", "invalid_url"),
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str, reason: str) -> None:
    result = HttpFetcher().fetch(url)

    assert (result.error_reason, result.status, result.body) == (reason, None, None)


def test_fetch_many_keeps_the_order_of_the_urls(server: str) -> None:
    urls = [f"{server}/nope", f"{server}/castle.png", "ftp://x/y", f"{server}/redirect"]

    results = HttpFetcher(allow_private_addresses=True).fetch_many(urls, max_workers=3)

    assert [(r.url, r.error_reason) for r in results] == [
        (urls[0], "http_error_404"),
        (urls[1], None),
        (urls[2], "unsupported_scheme"),
        (urls[3], None),
    ]
    assert all(isinstance(r, FetchResult) for r in results)
