"""The bad-input corpus (issue #8): hostile bytes and strings made by code, each run through the stage code the
assets call, each with the outcome it must have: a reject reason, a count of skipped records, or a normalised value.

Stages and the code each case goes through:

- ``warc``: :func:`mella_assets.crawl.html.extract_warc` (what ``raw_crawl`` runs per file) on a WARC file;
  outcome ``pages=<rows> images=<candidates> malformed=<count>``.
- ``html``: :func:`mella_assets.crawl.html.extract_page` on one response body; outcome the charset and the alt
  text after :func:`mella_assets.lib.text.normalize_text`, or the image URLs kept and skipped.
- ``alt_text``: :func:`mella_assets.know.filters.filter_alt_texts` (what ``alt_text_pairs`` runs) with lingua;
  outcome ``kept '<alt_text>'`` or ``reject <reason>``.
- ``images``: :func:`mella_assets.know.images.validate_image` (what ``images`` runs on every body); outcome
  ``kept WxH from <mode> (<what the pixels show>)`` or ``reject <reason>``.
- ``urls``: :meth:`mella_assets.lib.http.HttpFetcher.fetch` against a loopback echo server; outcome
  ``fetched path=<path the server saw> host=<Host header>`` or ``reject <reason> (requests=<n>)``; against a
  dripping server (``support.drip_server``, issue #16): ``reject <reason>`` by the fetch deadline
  (:data:`DRIP_DEADLINE_S`, per-read timeout 10 s), with a time limit.

``run_bad_input_report()`` runs every case and returns one :class:`ReportRow` each (an exception becomes the
outcome ``crash: ...``, never propagates), with the seconds it took and the process's peak resident memory after
it; a case with a time limit (``max_seconds``: the inputs that used to cost super-linear time, issue #16) that
overruns it has the outcome ``slow: ...``. ``render_report(rows)`` makes the Markdown table.
Regenerate it with ``PYTHONPATH=tests python -m support.bad_inputs [report.md]``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import random
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageDraw
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

STAGES = ("warc", "html", "alt_text", "images", "urls")
SEED = 8
PAGE_URL = "https://example.invalid/clanek/1"
GOOD_ALT = "Pražský hrad v zimě pokrytý sněhem"
HTML_50MB = 50_000_000
NESTING_DEPTH = 10_000
# Charsets the pipeline reads pages in: those of the 8 default languages as the web labels them (lib/html.py
# maps the WHATWG aliases tis-620, euc-kr, ... onto Python codecs), with a sample text in each.
CHARSET_SAMPLES: dict[str, tuple[str, str, str, str]] = {
    # label: (Python codec lib/html.py must report, first words, last words, what the bad bytes become). Where a
    # charset assigns all 256 bytes, nothing is undecodable: the bytes become their characters (C1 controls in
    # ISO-8859-x, dropped by normalisation).
    "utf-8": ("utf-8", "Pražský hrad", "v zimě", ""),
    "windows-1250": ("cp1250", "Pražský hrad", "v zimě", ""),
    "iso-8859-2": ("iso8859-2", "Budai vár", "télen", ""),
    "windows-1251": ("cp1251", "Московский Кремль", "зимой", ""),
    "koi8-r": ("koi8-r", "Московский Кремль", "зимой", "┘⌡÷"),
    "iso-8859-5": ("iso8859-5", "Београдска тврђава", "зими", ""),
    "windows-1256": ("cp1256", "مسجد الحسن الثاني", "في الشتاء", "…›ں"),
    "windows-1258": ("cp1258", "Phở bò", "Hà Nội", ""),
    "tis-620": ("cp874", "วัดพระแก้ว", "กรุงเทพ", ""),
    "windows-874": ("cp874", "วัดอรุณ", "ยามเย็น", ""),
    "euc-kr": ("cp949", "경복궁", "겨울 풍경", ""),
    "windows-949": ("cp949", "불국사", "가을", ""),  # "cp949" is Python's name, not a WHATWG label
}
# Labels Python has a codec for that are no WHATWG encoding label: ignored wherever they are declared (the page is
# then detected), never a LookupError or a decoding that turns bytes into markup (utf-7).
NON_WEB_CHARSET_LABELS = ("rot13", "base64", "hex", "zlib", "idna", "punycode", "undefined", "utf-7", "utf-32", "cp037")
# Sizes of the inputs that cost quadratic or exponential time before issue #16, and the time each may take now.
REDOS_SECONDS = 1.0
SVG_COMMENTS = 24  # <!--x--> comments before the root: ~4 s with the old nested repeat (doubling with each)
SPACE_RUN = 20_000  # spaces in an attribute or a header value: seconds each in the old, quadratic patterns
# The wall-clock deadline of a fetch from the dripping server (its per-read timeout is 10 s), and the time such a
# case may take: before issue #16 each ran 15 s (the server's own limit) or more.
DRIP_DEADLINE_S = 1.0
DRIP_CASE_SECONDS = DRIP_DEADLINE_S + 1.0
# An HTML/script payload for polyglots; ``marker`` is unique per case, so finding it in an output is proof.
POLYGLOT_HTML = "<html><body><script>alert('{marker}')</script><img src=x onerror=alert(1)></body></html>"


# -- report ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportRow:
    stage: str
    case: str
    expected: str
    outcome: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def crashed(self) -> bool:
        return self.outcome.startswith("crash:")

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected


@dataclass
class Context:
    """What the cases share: a scratch folder, a loopback echo server, and lazily built heavy objects."""

    workdir: Path
    echo: EchoServer
    _identifier: object | None = field(default=None, repr=False)
    _site: object | None = field(default=None, repr=False)
    _drip: object | None = field(default=None, repr=False)

    def identifier(self):
        if self._identifier is None:
            from mella_assets.lib.langid import LanguageIdentifier

            self._identifier = LanguageIdentifier("lingua")
        return self._identifier

    def site(self):
        """A scripted loopback site shared by the cases (each adds its own path), started on first use."""
        if self._site is None:
            from support.scripted_site import ScriptedSite

            self._site = ScriptedSite().start()
        return self._site

    def drip(self):
        """The dripping loopback server (support.drip_server), started on first use."""
        if self._drip is None:
            from support.drip_server import DripServer

            self._drip = DripServer(interval_s=0.1, max_s=15.0).__enter__()
        return self._drip

    def close(self) -> None:
        if self._site is not None:
            self._site.stop()
        if self._drip is not None:
            self._drip.__exit__(None, None, None)


@dataclass(frozen=True)
class Case:
    stage: str
    name: str
    expected: str
    run: Callable[[Context], str]
    max_seconds: float | None = None


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_case(case: Case, context: Context) -> ReportRow:
    """Run one case; an exception is reported as the outcome ``crash: <type>: <message>``, a case over its
    ``max_seconds`` as ``slow: <seconds> > <limit>; <outcome>``."""
    started = time.perf_counter()
    try:
        outcome = case.run(context)
    except Exception as error:  # the report must show a crash, not stop at it
        outcome = f"crash: {type(error).__name__}: {str(error)[:200]}"
    seconds = time.perf_counter() - started
    if case.max_seconds is not None and seconds > case.max_seconds and not outcome.startswith("crash:"):
        outcome = f"slow: {seconds:.2f} s > {case.max_seconds:g} s; {outcome}"
    return ReportRow(case.stage, case.name, case.expected, outcome, seconds, peak_rss_mb())


def run_bad_input_report(workdir: str | Path | None = None, cases: list[Case] | None = None) -> list[ReportRow]:
    """Every case of :func:`bad_input_cases` run through its stage code; one row each, in corpus order."""
    with tempfile.TemporaryDirectory(prefix="mella-bad-inputs-") as scratch, EchoServer() as echo:
        context = Context(Path(workdir or scratch), echo)
        context.workdir.mkdir(parents=True, exist_ok=True)
        try:
            return [run_case(case, context) for case in (cases or bad_input_cases())]
        finally:
            context.close()


def render_report(rows: list[ReportRow]) -> str:
    """Markdown: a summary per stage (cases, as expected, crashes), then one line per case."""
    lines = ["# Bad-input report", "", "| stage | cases | as expected | crashes |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        of_stage = [row for row in rows if row.stage == stage]
        crashes = sum(row.crashed for row in of_stage)
        lines.append(f"| {stage} | {len(of_stage)} | {sum(row.ok for row in of_stage)} | {crashes} |")
    total_ok, total_crashes = sum(row.ok for row in rows), sum(row.crashed for row in rows)
    lines += [f"| **all** | {len(rows)} | {total_ok} | {total_crashes} |", ""]
    lines += ["| stage | case | outcome | as expected | seconds | peak RSS MB |", "|---|---|---|---|---:|---:|"]
    for row in rows:
        outcome = row.outcome.replace("|", "\\|").replace("\n", " ")
        verdict = "yes" if row.ok else "NO: " + row.expected.replace("|", "\\|")
        lines.append(
            f"| {row.stage} | {row.case} | `{outcome}` | {verdict} | {row.seconds:.3f} | {row.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines) + "\n"


# -- WARC bytes --------------------------------------------------------------------------------------------
def warc_record(
    url: str,
    body: bytes,
    content_type: str | None = "text/html; charset=utf-8",
    status: str = "200 OK",
    compress: bool = True,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """One WARC ``response`` record (one gzip member when ``compress``)."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=compress)
    headers = [("Content-Type", content_type)] if content_type is not None else []
    headers += list(extra_headers)
    record = writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        http_headers=StatusAndHeaders(status, headers, protocol="HTTP/1.1"),
        warc_headers_dict={"WARC-Date": "2026-11-26T10:00:00Z"},
    )
    writer.write_record(record)
    return out.getvalue()


def page_html(alt: str = GOOD_ALT, src: str = "/img/hrad.jpg", lang: str = "cs") -> bytes:
    return f'<html lang="{lang}"><body><img src="{src}" alt="{alt}"></body></html>'.encode()


def good_records(count: int = 2) -> list[bytes]:
    return [warc_record(f"https://example.invalid/page/{i}", page_html(src=f"/img/{i}.jpg")) for i in range(count)]


def truncated_gzip_warc() -> bytes:
    """Two good pages, then a third whose gzip member is cut in half (a download that stopped)."""
    third = warc_record("https://example.invalid/page/cut", page_html(src="/img/cut.jpg"))
    return b"".join(good_records()) + third[: len(third) // 2]


def corrupted_gzip_warc() -> bytes:
    """Two good pages, then a member whose deflate stream has garbage bytes in the middle."""
    third = bytearray(warc_record("https://example.invalid/page/bad", page_html(src="/img/bad.jpg") * 20))
    middle = len(third) // 2
    third[middle : middle + 16] = random.Random(SEED).randbytes(16)
    return b"".join(good_records()) + bytes(third)


def lying_content_length_warc(extra: int) -> bytes:
    """One uncompressed record whose ``Content-Length`` is ``extra`` bytes off (longer: the file ends first;
    shorter: the rest of the body is read as the next record), then a good record."""
    record = warc_record("https://example.invalid/page/lie", page_html(src="/img/lie.jpg"), compress=False)
    head, sep, rest = record.partition(b"\r\n\r\n")
    lines = []
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            line = b"Content-Length: " + str(int(line.split(b":")[1]) + extra).encode()
        lines.append(line)
    lied = b"\r\n".join(lines) + sep + rest
    if extra > 0:
        return lied  # nothing follows: the declared length runs past the end of the file
    return lied + warc_record("https://example.invalid/page/after", page_html(src="/img/after.jpg"), compress=False)


def pdf_bytes() -> bytes:
    return b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + random.Random(SEED).randbytes(2000) + b"\n%%EOF\n"


def html_of_size(total: int) -> bytes:
    """A page of ``total`` bytes: an image at the start and one at the very end."""
    head = page_html(src="/img/first.jpg")[: -len(b"</body></html>")]
    tail = b'<img src="/img/last.jpg" alt="Obrazek na konci"></body></html>'
    filler = b"<p>Text odstavce.</p>\n"
    count = max(0, (total - len(head) - len(tail)) // len(filler))
    return head + filler * count + tail


def nested_html(depth: int = NESTING_DEPTH) -> bytes:
    return (
        b'<html lang="cs"><body>'
        + b"<div>" * depth
        + f'<figure><img src="/img/deep.jpg" alt="{GOOD_ALT}"><figcaption>Hrad</figcaption></figure>'.encode()
        + b"</div>" * depth
        + b"</body></html>"
    )


# -- charsets ----------------------------------------------------------------------------------------------
def undecodable_bytes(charset: str) -> bytes:
    """Bytes that ``charset`` cannot decode; for codecs that map all 256 bytes (ISO-8859-x, KOI8-R), the C1
    control range 0x80-0x9F or unassigned bytes, the nearest thing to garbage those charsets have."""
    codec = CHARSET_SAMPLES[charset][0]
    for candidate in (b"\xff\xfe\xfd", b"\x80", b"\x81", b"\x98", b"\xdb", b"\xfc\xfd\xfe\xff", b"\xc9\x41"):
        try:
            candidate.decode(codec)
        except UnicodeDecodeError:
            return candidate
    return b"\x85\x9b\x9f"


def encode_text(text: str, codec: str) -> bytes:
    """``text`` in ``codec``; a letter the codec lacks precomposed goes as base + combining marks (windows-1258
    writes Vietnamese so: ơ or ô precomposed, the tone mark combining)."""
    import unicodedata

    out = b""
    for char in unicodedata.normalize("NFC", text):
        marks = unicodedata.normalize("NFD", char)
        # The letter, or the base composed with one of its marks (ô, ơ) and the rest combining, or all combining.
        partial = [
            unicodedata.normalize("NFC", marks[0] + mark) + marks[1:i] + marks[i + 1 :]
            for i, mark in enumerate(marks)
            if i
        ]
        for form in (char, *partial, marks):
            try:
                out += form.encode(codec)
                break
            except UnicodeEncodeError:
                continue
        else:
            raise UnicodeEncodeError(codec, char, 0, 1, "no precomposed or decomposed form")
    return out


def charset_page(charset: str, declare: str = "meta") -> tuple[bytes, str | None]:
    """(body, Content-Type header) of a page in ``charset`` whose alt text has undecodable bytes between two
    words, the charset declared in a ``<meta>`` or in the HTTP header."""
    codec, first, second, _ = CHARSET_SAMPLES[charset]
    alt = encode_text(first, codec) + b" " + undecodable_bytes(charset) + b" " + encode_text(second, codec)
    meta = f'<meta charset="{charset}">'.encode() if declare == "meta" else b""
    body = b"<html><head>" + meta + b'</head><body><img src="/a.jpg" alt="' + alt + b'"></body></html>'
    return body, (f"text/html; charset={charset}" if declare == "header" else "text/html")


# -- images ------------------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(size: tuple[int, int] = (200, 150)) -> Image.Image:
    image = Image.new("RGB", size, (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, size[0] // 2, size[1] - 20), fill=(250, 240, 200))
    return image


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    patched = bytearray(data)
    patched[16:24] = struct.pack(">II", width, height)
    patched[29:33] = struct.pack(">I", zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


def png_bomb() -> bytes:
    """A tiny PNG whose header declares 50,000 × 50,000 pixels (2.5 gigapixels)."""
    return _patch_png_size(encode(Image.new("L", (8, 8)), "PNG"), 50_000, 50_000)


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header (SOF0) declares 65,500 × 65,500 pixels."""
    data = bytearray(encode(photo((64, 64)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", 65_500, 65_500)
    return bytes(data)


def gif_bomb() -> bytes:
    """A GIF whose logical screen and frame declare 65,535 × 65,535 pixels."""
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65_535, 65_535)
    at = data.index(b"\x2c")  # image descriptor
    data[at + 5 : at + 9] = struct.pack("<HH", 65_535, 65_535)
    return bytes(data)


def png_text_bomb() -> bytes:
    """A valid 200 × 150 PNG with a zTXt chunk that inflates to 64 MB."""
    data = encode(photo(), "PNG")
    payload = b"Comment\x00\x00" + zlib.compress(b"\x00" * 64_000_000, 9)
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + payload))
    return data[:33] + chunk + data[33:]


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# A box around the centre that stays clear of the quarter centres describe_pixels() looks at.
_MIDDLE = (85, 60, 115, 90)


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG, pure red (C=0 M=255 Y=255 K=0) around a black square in the middle (so that it is not a
    flat picture, which every perceptual hash calls a duplicate of every other flat picture)."""
    image = Image.new("CMYK", (200, 150), (0, 255, 255, 0))
    ImageDraw.Draw(image).rectangle(_MIDDLE, fill=(0, 0, 0, 255))
    return encode(image, "JPEG", quality=95)


def png_16bit() -> bytes:
    """A 16-bit greyscale PNG at half intensity (32768 of 65535) with a bright bar left of the middle."""
    image = Image.new("I;16", (200, 150), 32768)
    image.paste(60000, (20, 55, 45, 95))
    return encode(image, "PNG")


def animated(fmt: str) -> bytes:
    """Three frames (red, green, blue); only the first is a photo to keep."""
    frames = [Image.new("RGB", (120, 90), colour) for colour in ((220, 20, 20), (20, 220, 20), (20, 20, 220))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 200 × 100 JPEG, left half red, right half blue, a white square in the middle, with EXIF ``Orientation``
    (6: turn 90° clockwise)."""
    image = Image.new("RGB", (200, 100), (20, 20, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 99, 99), fill=(220, 20, 20))
    draw.rectangle((85, 35, 115, 65), fill=(255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def jpeg_with_segment(marker: int, payload: bytes, base: bytes | None = None) -> bytes:
    """A JPEG (``base``, default a photo) with one more segment right after SOI: ``marker`` 0xFE is a comment
    (COM), 0xE0-0xEF an application segment (APPn); ``payload`` is its content (up to 65,533 bytes)."""
    data = base or encode(photo(), "JPEG")
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A photo PNG with one more chunk (``kind``: b"tEXt", b"zTXt", b"iTXt", ...) before IEND, CRC right."""
    data = encode(photo(), "PNG")
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    at = data.rindex(b"IEND") - 4
    return data[:at] + chunk + data[at:]


def polyglot(carrier: str, payload: bytes) -> bytes:
    """An image that also carries ``payload`` (HTML or script) in a metadata field browsers and viewers keep:
    ``carrier`` is one of :data:`POLYGLOT_CARRIERS`."""
    text = payload.decode("latin-1")
    if carrier == "jpeg COM":
        return jpeg_with_segment(0xFE, payload)
    if carrier == "jpeg APP1 XMP":
        return jpeg_with_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + payload)
    if carrier == "jpeg APP13 IPTC":
        return jpeg_with_segment(
            0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", len(payload)) + payload
        )
    if carrier == "jpeg APP15":
        return jpeg_with_segment(0xEF, payload)
    if carrier == "jpeg EXIF ImageDescription":
        exif = Image.Exif()
        exif[0x010E] = text
        return encode(photo(), "JPEG", exif=exif.tobytes())
    if carrier == "jpeg APP2 ICC profile":
        return encode(photo(), "JPEG", icc_profile=b"\x00\x00\x02\x00mntr" + payload)
    if carrier == "png tEXt":
        return png_with_chunk(b"tEXt", b"Comment\x00" + payload)
    if carrier == "png zTXt":
        return png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(payload))
    if carrier == "png iTXt":
        return png_with_chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00" + payload)
    if carrier == "gif comment":
        return encode(photo().convert("P"), "GIF", comment=payload)
    if carrier == "webp XMP":
        return encode(photo(), "WEBP", xmp=payload)
    raise ValueError(f"unknown polyglot carrier {carrier!r}")


POLYGLOT_CARRIERS = (
    "jpeg COM",
    "jpeg APP1 XMP",
    "jpeg APP13 IPTC",
    "jpeg APP15",
    "jpeg EXIF ImageDescription",
    "jpeg APP2 ICC profile",
    "png tEXt",
    "png zTXt",
    "png iTXt",
    "gif comment",
    "webp XMP",
)


def jpeg_segments(data: bytes) -> list[int]:
    """The markers of a JPEG's segments from SOI up to the start of scan (what a stored image carries besides its
    entropy-coded pixels)."""
    markers, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: pixels follow
            break
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return markers


def svg_after_comments(count: int, root: bool = True) -> bytes:
    """``count`` XML comments, then an ``<svg>`` root (or nothing): the shape that made the old SVG sniffer's
    nested repeat take time doubling with every comment."""
    return b"<!--x-->" * count + (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>' if root else b"")


def describe_pixels(data: bytes) -> str:
    """Colour names at the centres of the four quarters of an encoded image (what a viewer of the stored JPEG sees)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size

    def name(xy: tuple[int, int]) -> str:
        r, g, b = image.getpixel(xy)
        if max(r, g, b) - min(r, g, b) < 24:
            return "white" if r > 230 else "black" if r < 25 else f"grey{round(r / 32) * 32}"
        return ("red", "green", "blue")[max(range(3), key=(r, g, b).__getitem__)]

    quarters = {"tl": (w // 4, h // 4), "tr": (3 * w // 4, h // 4), "bl": (w // 4, 3 * h // 4)}
    quarters["br"] = (3 * w // 4, 3 * h // 4)
    return " ".join(f"{corner}={name(xy)}" for corner, xy in quarters.items())


# -- loopback echo server (url cases) ----------------------------------------------------------------------
class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _EchoHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, self.headers.get("Host", "")))
        body = f"{self.path}\n{self.headers.get('Host', '')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _EchoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _EchoHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: oversized request lines are part of what the cases send."""


class EchoServer:
    """Answers every GET with its request path and Host header; logs each request."""

    def __init__(self) -> None:
        self._server = _EchoHTTPServer()
        self.port = self._server.server_address[1]

    def __enter__(self) -> EchoServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def request_count(self) -> int:
        with self._server.lock:
            return len(self._server.requests)


def _echo_resolver(port_host: str) -> Callable[[str, int], list[str]]:
    """Every ``*.test`` name (IDNA-encoded, as the fetcher sends it) resolves to the echo server's address."""
    import socket

    def resolve(host: str, port: int) -> list[str]:
        if host.endswith(".test"):
            return [port_host]
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]

    return resolve


# -- stage runners -----------------------------------------------------------------------------------------
def _warc(data: bytes, name: str = "bad.warc.gz") -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.crawl.html import extract_warc
        from mella_assets.crawl.warc import WarcStats

        path = context.workdir / name
        path.write_bytes(data() if callable(data) else data)
        stats = WarcStats()
        try:
            frame = extract_warc(path, stats)
        finally:
            path.unlink(missing_ok=True)
        images = sum(len(images) for images in frame["images"].to_list()) if frame.height else 0
        return f"pages={frame.height} images={images} malformed={stats.malformed}"

    return run


def _charset(charset: str, declare: str = "meta") -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.crawl.html import extract_page
        from mella_assets.lib.text import normalize_text

        body, content_type = charset_page(charset, declare)
        page = extract_page(body, PAGE_URL, content_type)
        alts = [normalize_text(image.alt_raw or "") for image in page.images]
        return f"charset={page.charset} alt={alts[0]!r}" if alts else f"charset={page.charset} images=0"

    return run


def _page(body: bytes | Callable[[], bytes], content_type: str = "text/html") -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.crawl.html import extract_page

        page = extract_page(body() if callable(body) else body, PAGE_URL, content_type)
        return f"images={[image.image_url for image in page.images]} skipped={page.skipped_urls}"

    return run


def _alt(alt: str | None, language: str = "cs", html_lang: str | None = None) -> Callable[[Context], str]:
    def run(context: Context) -> str:
        import polars as pl

        from mella_assets.know.filters import filter_alt_texts
        from mella_assets.languages import REGISTRY

        frame = pl.DataFrame(
            {
                "page_url": [PAGE_URL],
                "domain": ["example.invalid"],
                "image_url": ["https://example.invalid/img/1.jpg"],
                "alt_raw": [alt],
                "html_lang": [html_lang or language],
            },
            schema_overrides={"alt_raw": pl.String, "html_lang": pl.String},
        )
        result = filter_alt_texts(frame, REGISTRY[language], context.identifier())
        if result.kept.height:
            return f"kept {result.kept['alt_text'][0]!r}"
        return f"reject {result.rejects['reason'][0]}"

    return run


def _normalised(text: str) -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.lib.text import normalize_text

        return f"normalised {normalize_text(text)!r}"

    return run


def _image(data: bytes | Callable[[], bytes]) -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.know.images import ImageReject, validate_image

        checked = validate_image(data() if callable(data) else data)
        if isinstance(checked, ImageReject):
            return f"reject {checked.reason}"
        return f"kept {checked.width}x{checked.height} from {checked.mode_in} ({describe_pixels(checked.data)})"

    return run


def _stored_without(carrier: str) -> Callable[[Context], str]:
    """A polyglot through validate_image; outcome ``kept ... payload=<absent|present> segments=<JPEG markers>``."""

    def run(context: Context) -> str:
        from mella_assets.know.images import ImageReject, validate_image

        marker = f"mella-{carrier.replace(' ', '-')}-{SEED}"
        checked = validate_image(polyglot(carrier, POLYGLOT_HTML.format(marker=marker).encode()))
        if isinstance(checked, ImageReject):
            return f"reject {checked.reason}"
        payload = "present" if marker.encode() in checked.data or b"<script" in checked.data else "absent"
        # Segments that carry metadata: COM and APP1-APP15 (APP0 is the JFIF header every JPEG starts with).
        metadata = [f"{m:02X}" for m in jpeg_segments(checked.data) if m == 0xFE or 0xE1 <= m <= 0xEF]
        return f"kept {checked.width}x{checked.height} payload={payload} metadata={' '.join(metadata) or 'none'}"

    return run


def _scripted(responses: tuple[tuple[int, tuple[tuple[str, str], ...], bytes], ...]) -> Callable[[Context], str]:
    """A fetch from the shared scripted site, whose path for this case answers ``responses`` in turn; outcome
    ``fetched bytes=<n> attempts=<n>`` or ``reject <reason> (requests=<n>)``."""

    def run(context: Context) -> str:
        from mella_assets.lib.http import HttpFetcher
        from support.scripted_site import Route

        site = context.site()
        path = f"/case-{len(site.routes)}.jpg"
        site.routes[path] = Route(responses=responses)
        fetcher = HttpFetcher(timeout_s=5, allowed_networks=["127.0.0.1/32"], max_retries=2, backoff_s=0.01)
        result = fetcher.fetch(f"{site.base_url}{path}")
        if result.error_reason is not None:
            return f"reject {result.error_reason} (requests={site.hits.get(path, 0)})"
        return f"fetched bytes={len(result.body or b'')} attempts={result.attempts}"

    return run


def _dripping(pattern: str) -> Callable[[Context], str]:
    """A fetch from the dripping server's ``pattern``; outcome ``reject <reason>`` (or ``fetched bytes=<n>``)."""

    def run(context: Context) -> str:
        from mella_assets.lib.http import HttpFetcher

        fetcher = HttpFetcher(
            timeout_s=10, total_timeout_s=DRIP_DEADLINE_S, allowed_networks=["127.0.0.1/32"], backoff_s=0.01
        )
        result = fetcher.fetch(context.drip().url(pattern))
        if result.error_reason is not None:
            return f"reject {result.error_reason}"
        return f"fetched bytes={len(result.body or b'')}"

    return run


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


def _url(url: str | Callable[[int], str]) -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.lib.http import HttpFetcher

        fetcher = HttpFetcher(
            timeout_s=5, allowed_networks=["127.0.0.1/32"], max_retries=0, resolver=_echo_resolver("127.0.0.1")
        )
        before = context.echo.request_count()
        result = fetcher.fetch(url(context.echo.port) if callable(url) else url)
        sent = context.echo.request_count() - before
        if result.error_reason is not None:
            return f"reject {result.error_reason} (requests={sent})"
        path, host = result.body.decode().split("\n", 1)
        return f"fetched path={path} host={host.rsplit(':', 1)[0]}"

    return run


# -- the corpus --------------------------------------------------------------------------------------------
def _random_bytes(n: int) -> bytes:
    return random.Random(SEED).randbytes(n)


def bad_input_cases() -> list[Case]:
    """Every case of the corpus with its expected outcome (the specification the tests assert)."""
    huge_query = lambda port: f"http://127.0.0.1:{port}/img.jpg?q=" + "a" * 100_000  # noqa: E731
    cases = [
        # warc: a broken file ends that file with a count, pages before the damage survive
        Case("warc", "truncated gzip member", "pages=2 images=2 malformed=1", _warc(truncated_gzip_warc)),
        Case("warc", "corrupted deflate stream", "pages=2 images=2 malformed=1", _warc(corrupted_gzip_warc)),
        Case("warc", "random bytes named .warc.gz", "pages=0 images=0 malformed=1", _warc(_random_bytes(5000))),
        Case("warc", "empty file", "pages=0 images=0 malformed=0", _warc(b"")),
        Case("warc", "gzip of plain text", "pages=0 images=0 malformed=1", _warc(gzip.compress(b"hello\n" * 50))),
        Case(
            "warc",
            "Content-Length longer than the record",
            "pages=0 images=0 malformed=1",
            _warc(lambda: lying_content_length_warc(+5000), "lie.warc"),
        ),
        Case(
            "warc",
            "Content-Length shorter than the record (body cut there, reading resumes at the next record)",
            "pages=2 images=1 malformed=1",
            _warc(lambda: lying_content_length_warc(-30), "lie.warc"),
        ),
        Case(
            "warc",
            "PDF served as text/html",
            "pages=1 images=0 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/doc", pdf_bytes())),
        ),
        Case(
            "warc",
            "random bytes served as text/html",
            "pages=1 images=0 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/noise", _random_bytes(20_000))),
        ),
        Case(
            "warc",
            "50 MB HTML page (cut at the body cap: the last image is past it)",
            "pages=1 images=1 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/huge", html_of_size(HTML_50MB))),
        ),
        Case(
            "warc",
            f"{NESTING_DEPTH:,}-deep nested HTML",
            "pages=1 images=1 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/deep", nested_html())),
        ),
        Case(
            "warc",
            "corrupt gzip member between good records (reading resumes at the next member)",
            "pages=4 images=4 malformed=1",
            _warc(lambda: corrupted_gzip_warc() + b"".join(good_records())),
        ),
        Case(
            "warc",
            "5,000 <img> under a 2,000-char <base href> (candidates stop at the page budget)",
            "pages=1 images=2000 malformed=0",
            _warc(
                lambda: warc_record(
                    "https://example.invalid/amplify",
                    b'<html><head><base href="https://example.invalid/'
                    + b"d/" * 1000
                    + b'"></head><body>'
                    + b'<img src="a.jpg">' * 5000,
                )
            ),
        ),
        Case(
            "warc",
            "40,000-deep nested HTML (page_too_complex, not parsed)",
            "pages=0 images=0 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/deeper", nested_html(40_000))),
        ),
        Case(
            "warc",
            "response without Content-Type",
            "pages=0 images=0 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/none", page_html(), content_type=None)),
        ),
        Case(
            "warc",
            "garbage HTTP status line",
            "pages=0 images=0 malformed=0",
            _warc(lambda: warc_record("https://example.invalid/status", page_html(), status="abc banana")),
        ),
        Case(
            "warc",
            "Python-only codec label (rot13) in a record's Content-Type, then a good record",
            "pages=2 images=2 malformed=0",
            _warc(
                lambda: (
                    warc_record("https://example.invalid/rot", page_html(), "text/html; charset=rot13")
                    + good_records(1)[0]
                )
            ),
        ),
        Case(
            "warc",
            "chunked body with a negative chunk size (read as it is), then a good record",
            "pages=2 images=2 malformed=0",
            _warc(
                lambda: (
                    warc_record(
                        "https://example.invalid/chunked",
                        b"-6\r\n" + page_html(),
                        extra_headers=(("Transfer-Encoding", "chunked"),),
                    )
                    + good_records(1)[0]
                )
            ),
            max_seconds=REDOS_SECONDS * 5,
        ),
        # html: undecodable bytes in every supported charset become nothing; the words around them survive
        *(
            Case(
                "html",
                f"undecodable bytes in {charset}",
                f"charset={CHARSET_SAMPLES[charset][0]} alt={_joined(CHARSET_SAMPLES[charset])!r}",
                _charset(charset),
            )
            for charset in CHARSET_SAMPLES
        ),
        Case(
            "html",
            "undecodable bytes, charset in the HTTP header (windows-1251)",
            f"charset=cp1251 alt={_joined(CHARSET_SAMPLES['windows-1251'])!r}",
            _charset("windows-1251", declare="header"),
        ),
        Case(
            "html",
            "unknown charset label falls back to detection",
            "charset=utf-8 alt='Pražský hrad'",
            _page_alt(b'<meta charset="x-bogus-9"><img src="/a.jpg" alt="Pra\xc5\xbesk\xc3\xbd hrad">'),
        ),
        # html: only WHATWG labels name a charset; a Python-only codec label is ignored (the page is detected)
        *(
            Case(
                "html",
                f"Python-only codec label {label!r} in <meta> and in the HTTP header",
                "charset=utf-8 alt='Pražský hrad'",
                _page_alt(
                    f'<meta charset="{label}"><img src="/a.jpg" alt="Pražský hrad">'.encode(),
                    f"text/html; charset={label}",
                ),
            )
            for label in NON_WEB_CHARSET_LABELS
        ),
        Case(
            "html",
            "utf-7 label refused: +ADw-script+AD4- stays text, never becomes <script>",
            "charset=utf-8 alt='+ADw-script+AD4-alert(1)+ADw-/script+AD4-'",
            _page_alt(
                b'<meta charset="utf-7"><img src="/a.jpg" alt="+ADw-script+AD4-alert(1)+ADw-/script+AD4-">',
                "text/html; charset=utf-7",
            ),
        ),
        Case(
            "html",
            "ISO-2022-KR label: the replacement encoding (one U+FFFD, no content)",
            "charset=replacement images=0",
            _page_alt(page_html(), "text/html; charset=iso-2022-kr"),
        ),
        Case(
            "html",
            "UTF-16LE BOM wins over the HTTP header's windows-1252",
            "charset=utf-16-le alt='Pražský hrad'",
            _page_alt(
                codecs.BOM_UTF16_LE + '<img src="/a.jpg" alt="Pražský hrad">'.encode("utf-16-le"),
                "text/html; charset=windows-1252",
            ),
        ),
        Case(
            "html",
            "UTF-8 BOM wins over the HTTP header's koi8-r",
            "charset=utf-8 alt='Pražský hrad'",
            _page_alt(codecs.BOM_UTF8 + '<img src="/a.jpg" alt="Pražský hrad">'.encode(), "text/html; charset=koi8-r"),
        ),
        # html: values that cost quadratic time in the old patterns now cost linear time
        Case(
            "html",
            f"Content-Type header with {SPACE_RUN:,} spaces after charset=",
            "charset=utf-8 alt='Pražský hrad'",
            _page_alt('<img src="/a.jpg" alt="Pražský hrad">'.encode(), "text/html; charset=" + " " * SPACE_RUN + "!"),
            max_seconds=REDOS_SECONDS,
        ),
        Case(
            "html",
            "<meta tags never closed, filling the charset sniffing window",
            "charset=utf-8 alt='Pražský hrad'",
            _page_alt(b"<meta charset = " * 300 + '><img src="/a.jpg" alt="Pražský hrad">'.encode()),
            max_seconds=REDOS_SECONDS,
        ),
        Case(
            "html",
            f"srcset of {SPACE_RUN:,} spaces (the src is used)",
            "images=['https://example.invalid/a.jpg'] skipped=0",
            _page(b'<img srcset="' + b" " * SPACE_RUN + b'" src="/a.jpg" alt="x">'),
            max_seconds=REDOS_SECONDS,
        ),
        Case(
            "html",
            f"width of a digit and {SPACE_RUN:,} spaces, height of 5,000 digits (both no number)",
            "width=None height=None",
            _dimensions(b'<img src="/a.jpg" width="1' + b" " * SPACE_RUN + b'x" height="' + b"9" * 5000 + b'">'),
            max_seconds=REDOS_SECONDS,
        ),
        Case(
            "html",
            "width 1.5px and height of 20 digits (over the 64-bit column: no number)",
            "width=1 height=None",
            _dimensions(b'<img src="/a.jpg" width=" 1.5PX " height="99999999999999999999">'),
        ),
        Case(
            "html",
            "NUL and C0 controls inside an alt attribute",
            "charset=utf-8 alt='Pražský hrad v zimě'",
            _page_alt('<meta charset="utf-8"><img src="/a.jpg" alt="Pražský\x00 hrad\x01 v\x1b zimě">'.encode()),
        ),
        Case(
            "html",
            "img URLs with javascript:, data:, file:, ftp: and no host are skipped",
            "images=[] skipped=5",
            _page(
                b'<img src="javascript:alert(1)" alt="a"><img src="data:image/png;base64,iVBORw0KGgo=" alt="b">'
                b'<img src="file:///etc/passwd" alt="c"><img src="ftp://example.invalid/x.jpg" alt="d">'
                b'<img src="http:///x.jpg" alt="e">'
            ),
        ),
        Case(
            "html",
            "img URL with credentials, '..' path and an IDN host stays a candidate (the fetcher judges)",
            "images=['https://user:pass@example.invalid/img/a.jpg', 'https://example.invalid/etc/passwd', "
            "'https://PRAHA.example/x.jpg', 'https://\u0440\u0438\u043c.example/x.jpg'] skipped=0",
            _page(
                b'<img src="https://user:pass@example.invalid/img/a.jpg" alt="a">'
                b'<img src="../../../etc/passwd" alt="b">'
                b'<img src="https://PRAHA.example/x.jpg" alt="c">'
                + '<img src="https://\u0440\u0438\u043c.example/x.jpg" alt="d">'.encode()
            ),
        ),
        # alt_text: controls, bidi overrides and zero-width characters are removed before any check
        Case(
            "alt_text", "C0 controls", f"kept {GOOD_ALT!r}", _alt("Pražský\x01 hrad\x02 v\x7f zimě\x1b pokrytý sněhem")
        ),
        Case("alt_text", "C1 controls", f"kept {GOOD_ALT!r}", _alt("Pražský\x9b hrad\x85v zimě\x80 pokrytý sněhem")),
        Case(
            "alt_text",
            "RLO / LRO / PDF bidi overrides",
            f"kept {GOOD_ALT!r}",
            _alt("Pražský hrad \u202ev zimě\u202c \u202dpokrytý\u202c sněhem"),
        ),
        Case(
            "alt_text",
            "bidi isolates and marks (LRI RLI FSI PDI LRM RLM ALM)",
            f"kept {GOOD_ALT!r}",
            _alt("\u2066Pražský\u2069 \u2067hrad\u2069 \u2068v\u2069 zimě\u200e pokrytý\u200f sněhem\u061c"),
        ),
        Case(
            "alt_text",
            "zero-width space, joiners, word joiner, BOM, soft hyphen",
            f"kept {GOOD_ALT!r}",
            _alt("Praž\u200bský hr\u200cad\u200d v\u2060 zimě\ufeff pokry\u00adtý sněhem"),
        ),
        Case(
            "alt_text",
            "Arabic alt with right-to-left marks",
            "kept 'مسجد الحسن الثاني في الدار البيضاء'",
            _alt("\u200fمسجد الحسن\u200f الثاني في الدار البيضاء\u202c", language="ar"),
        ),
        Case(
            "alt_text",
            "only invisible characters",
            "reject empty_alt",
            _alt("\u200b\u200c\u202e\u2066\x00\x1b\ufeff\ufffd"),
        ),
        Case(
            "alt_text",
            "exotic whitespace (NBSP, ideographic, line/paragraph separators, NEL)",
            f"kept {GOOD_ALT!r}",
            _alt("Pražský\u00a0hrad\u3000v\u2028zimě\u2029pokrytý\x85sněhem"),
        ),
        Case("alt_text", "100,000-character alt", "reject alt_too_long", _alt("hrad " * 20_000)),
        Case(
            "alt_text",
            "combining-mark flood (zalgo)",
            "reject alt_repeated_chars",
            _alt("Praha" + "\u0301\u0316" * 300),
        ),
        # one word unit: a label whatever its language (issue 17)
        Case("alt_text", "markup inside alt", "reject alt_too_short", _alt("<script>alert('owned')</script>")),
        Case(
            "alt_text",
            "lone surrogates (normalize_text, before any frame)",
            f"normalised {GOOD_ALT!r}",
            _normalised("Pražský\ud800 hrad v\udfff zimě pokrytý sněhem"),
        ),
        # images: every hostile body ends as a reject reason or a correct RGB JPEG
        Case("images", "PNG declaring 50,000 x 50,000 pixels", "reject pixel_bomb", _image(png_bomb)),
        Case("images", "JPEG declaring 65,500 x 65,500 pixels", "reject pixel_bomb", _image(jpeg_bomb)),
        Case("images", "GIF declaring 65,535 x 65,535 pixels", "reject pixel_bomb", _image(gif_bomb)),
        Case("images", "PNG with a 64 MB zTXt chunk", "reject not_decodable", _image(png_text_bomb)),
        Case("images", "truncated JPEG", "reject not_decodable", _image(lambda: truncated(encode(photo(), "JPEG")))),
        Case("images", "truncated PNG", "reject not_decodable", _image(lambda: truncated(encode(photo(), "PNG")))),
        Case("images", "truncated WebP", "reject not_decodable", _image(lambda: truncated(encode(photo(), "WEBP")))),
        Case(
            "images",
            "CMYK JPEG",
            "kept 200x150 from CMYK (tl=red tr=red bl=red br=red)",
            _image(cmyk_jpeg),
        ),
        Case(
            "images",
            "16-bit greyscale PNG",
            "kept 200x150 from I;16 (tl=grey128 tr=grey128 bl=grey128 br=grey128)",
            _image(png_16bit),
        ),
        Case(
            "images",
            "animated GIF (first frame kept)",
            "kept 120x90 from P (tl=red tr=red bl=red br=red)",
            _image(lambda: animated("GIF")),
        ),
        Case(
            "images",
            "animated WebP (first frame kept)",
            "kept 120x90 from RGB (tl=red tr=red bl=red br=red)",
            _image(lambda: animated("WEBP")),
        ),
        Case(
            "images",
            "EXIF orientation 6 (rotation applied, then EXIF dropped)",
            "kept 100x200 from RGB (tl=red tr=red bl=blue br=blue)",
            _image(exif_rotated_jpeg),
        ),
        Case(
            "images",
            "EXIF orientation 9 (out of range: ignored)",
            "kept 200x100 from RGB (tl=red tr=blue bl=red br=blue)",
            _image(lambda: exif_rotated_jpeg(9)),
        ),
        Case("images", "HTML bytes", "reject not_decodable", _image(b"<!DOCTYPE html><html><body>x</body></html>")),
        Case("images", "empty body", "reject not_decodable", _image(b"")),
        Case("images", "random bytes", "reject not_decodable", _image(lambda: _random_bytes(10_000))),
        Case("images", "PDF bytes", "reject not_decodable", _image(pdf_bytes)),
        Case(
            "images", "GIF magic then garbage", "reject not_decodable", _image(lambda: b"GIF89a" + _random_bytes(500))
        ),
        Case(
            "images",
            "SVG",
            "reject unsupported_format",
            _image(b'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="600"><rect/></svg>'),
        ),
        Case(
            "images",
            f"{SVG_COMMENTS} XML comments, then an <svg> root",
            "reject unsupported_format",
            _image(lambda: svg_after_comments(SVG_COMMENTS)),
            max_seconds=REDOS_SECONDS,
        ),
        Case(
            "images",
            f"{SVG_COMMENTS} XML comments and no <svg> root",
            "reject not_decodable",
            _image(lambda: svg_after_comments(SVG_COMMENTS, root=False)),
            max_seconds=REDOS_SECONDS,
        ),
        Case("images", "TIFF (not an allowed format)", "reject unsupported_format", _image(_other_format("TIFF"))),
        Case("images", "ICO (not an allowed format)", "reject unsupported_format", _image(_other_format("ICO"))),
        Case(
            "images",
            "EPS (not an allowed format: Ghostscript never runs)",
            "reject unsupported_format",
            _image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 200 150\nshowpage\n"),
        ),
        Case("images", "TGA (not an allowed format)", "reject unsupported_format", _image(_other_format("TGA"))),
        *(
            Case(
                "images",
                f"polyglot: HTML and script in the {carrier}",
                "kept 200x150 payload=absent metadata=none",
                _stored_without(carrier),
            )
            for carrier in POLYGLOT_CARRIERS
        ),
        Case(
            "images", "1 x 1 tracking pixel", "reject too_small", _image(lambda: encode(Image.new("P", (1, 1)), "GIF"))
        ),
        Case("images", "2000 x 64 banner", "reject bad_aspect_ratio", _image(lambda: encode(photo((2000, 64)), "PNG"))),
        # urls: the fetcher refuses or normalises before a byte is sent
        Case(
            "urls",
            "credentials user:pass@",
            "reject url_has_credentials (requests=0)",
            _url(lambda p: f"http://user:pass@127.0.0.1:{p}/a.jpg"),
        ),
        Case(
            "urls",
            "user name only",
            "reject url_has_credentials (requests=0)",
            _url(lambda p: f"http://admin@127.0.0.1:{p}/a.jpg"),
        ),
        Case("urls", "file: scheme", "reject unsupported_scheme (requests=0)", _url("file:///etc/passwd")),
        Case("urls", "ftp: scheme", "reject unsupported_scheme (requests=0)", _url("ftp://127.0.0.1/a.jpg")),
        Case("urls", "javascript: scheme", "reject unsupported_scheme (requests=0)", _url("javascript:alert(1)")),
        Case(
            "urls",
            "data: scheme",
            "reject unsupported_scheme (requests=0)",
            _url("data:image/png;base64,iVBORw0KGgo="),
        ),
        Case("urls", "gopher: scheme", "reject unsupported_scheme (requests=0)", _url("gopher://127.0.0.1:70/_x")),
        Case(
            "urls",
            "IDN host (sent as punycode)",
            "fetched path=/obr.jpg host=xn--80aa7be0a.test",
            _url(lambda p: f"http://праха.test:{p}/obr.jpg"),
        ),
        Case("urls", "invalid IDN label", "reject invalid_url (requests=0)", _url("http://xn--a.test/x.jpg")),
        Case(
            "urls",
            "'..' path segments (removed, the request stays on the host)",
            "fetched path=/etc/passwd host=127.0.0.1",
            _url(lambda p: f"http://127.0.0.1:{p}/img/a/../../../etc/passwd"),
        ),
        Case(
            "urls",
            "percent-encoded '..' (decoded, sent to the same host)",
            "fetched path=/img/../../etc/passwd host=127.0.0.1",
            _url(lambda p: f"http://127.0.0.1:{p}/img/%2e%2e/%2e%2e/etc/passwd"),
        ),
        Case("urls", "100 KB query string", "reject url_too_long (requests=0)", _url(huge_query)),
        Case("urls", "no host", "reject invalid_url (requests=0)", _url("http:///a.jpg")),
        Case("urls", "port out of range", "reject invalid_url (requests=0)", _url("http://127.0.0.1:99999/a.jpg")),
        Case("urls", "unclosed IPv6 bracket", "reject invalid_url (requests=0)", _url("http://[::1/a.jpg")),
        Case(
            "urls",
            "spaces and a newline in the path (percent-encoded)",
            "fetched path=/a%20b%0Ac.jpg host=127.0.0.1",
            _url(lambda p: f"http://127.0.0.1:{p}/a b\nc.jpg"),
        ),
        # urls: a header number in other digits than ASCII is malformed, ignored: never a permanent reject
        *(
            Case(
                "urls",
                f"Retry-After: {digit} on a 503, then the image (backoff instead)",
                "fetched bytes=5 attempts=2",
                _scripted(((503, (("Retry-After", digit),), b""), (200, (("Content-Type", "image/jpeg"),), b"image"))),
            )
            for digit in ("²", "³³", "¹0")
        ),
        Case(
            "urls",
            "Content-Length: ² (ignored: the body is read to the end, under the size cap)",
            "fetched bytes=5 attempts=1",
            _scripted(
                ((200, (("Content-Type", "image/jpeg"), ("Content-Length", "²"), ("Connection", "close")), b"image"),)
            ),
        ),
    ]
    # urls: a server that drips (a byte every 0.1 s, never silent for a read timeout) costs one fetch its deadline
    cases += [
        Case("urls", f"drip: {name}", expected, _dripping(pattern), max_seconds=DRIP_CASE_SECONDS)
        for pattern, name, expected in (
            ("status_line", "status line byte by byte", "reject timeout"),
            ("headers", "endless header value", "reject timeout"),
            ("body", "body byte by byte under a 1 MB Content-Length", "reject timeout"),
            ("body_until_close", "body byte by byte until the close", "reject timeout"),
            ("chunked", "one-byte chunks byte by byte", "reject timeout"),
            ("silent", "no answer (per-read timeout 10 s)", "reject timeout"),
            ("retry_after", "503 with Retry-After past the deadline", "reject http_error_503"),
        )
    ]
    # urls: content encodings the fetcher decodes itself (every gzip member, stacked codings, each layer capped)
    gzip_header = (("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip"))
    cases += [
        Case(
            "urls",
            "gzip body of two members",
            "fetched bytes=6 attempts=1",
            _scripted(((200, gzip_header, gzip.compress(b"abc") + gzip.compress(b"def")),)),
        ),
        Case(
            "urls",
            "Content-Encoding: gzip, gzip",
            "fetched bytes=5 attempts=1",
            _scripted(
                (
                    (
                        200,
                        (("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip, gzip")),
                        gzip.compress(gzip.compress(b"image")),
                    ),
                )
            ),
        ),
        Case(
            "urls",
            "gzip, gzip bomb (64 MB of zeros in ~1 KB, cap 20 MB)",
            "reject too_large (requests=1)",
            _scripted(
                (
                    (
                        200,
                        (("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip, gzip")),
                        gzip.compress(_gzip_of_zeros(64 << 20)),
                    ),
                )
            ),
            max_seconds=REDOS_SECONDS * 2,
        ),
        Case(
            "urls",
            "Content-Encoding: br (not asked for)",
            "reject unsupported_content_encoding (requests=1)",
            _scripted(((200, (("Content-Type", "image/jpeg"), ("Content-Encoding", "br")), b"\x0b\x02\x80image\x03"),)),
        ),
    ]
    return cases


def _joined(sample: tuple[str, str, str, str]) -> str:
    _codec, first, second, middle = sample
    return " ".join(part for part in (first, middle, second) if part)


def _page_alt(body: bytes, content_type: str = "text/html") -> Callable[[Context], str]:
    def run(context: Context) -> str:
        from mella_assets.crawl.html import extract_page
        from mella_assets.lib.text import normalize_text

        page = extract_page(body, PAGE_URL, content_type)
        alts = [normalize_text(image.alt_raw or "") for image in page.images]
        return f"charset={page.charset} alt={alts[0]!r}" if alts else f"charset={page.charset} images=0"

    return run


def _dimensions(body: bytes) -> Callable[[Context], str]:
    """The first image's width and height attributes as extract_page reads them."""

    def run(context: Context) -> str:
        from mella_assets.crawl.html import extract_page

        page = extract_page(body, PAGE_URL, "text/html")
        image = page.images[0]
        return f"width={image.width_attr} height={image.height_attr}"

    return run


def _other_format(fmt: str, **options: object) -> Callable[[], bytes]:
    return lambda: encode(photo(), fmt, **options)


def main(argv: list[str]) -> int:
    rows = run_bad_input_report()
    text = render_report(rows)
    if len(argv) > 1:
        Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[1]).write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
