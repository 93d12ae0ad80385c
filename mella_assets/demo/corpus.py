"""The demo corpus: native web pages per language, their images on a loopback site, and WARC files of the pages.

The native texts live in ``corpus/<code>.json`` (hand-written); the noise that real pages carry (logos, tracking
pixels, file-name alts, legacy charsets, broken images...) is added here by code, the same way for every language.
Everything is deterministic: the same inputs give byte-identical images, HTML and WARC files.

Page URLs use fake per-language host names and exist only inside the WARC files; every image URL points to the
loopback site (``base_url``), served by :class:`mella_assets.demo.site.DemoSiteServer`.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

CORPUS_DIR = Path(__file__).with_name("corpus")

# The charset of the one legacy-encoded page per language: (label in HTTP and <meta>, Python codec).
LEGACY_CHARSETS: dict[str, tuple[str, str]] = {
    "ar": ("windows-1256", "cp1256"),
    "cs": ("windows-1250", "cp1250"),
    "hu": ("iso-8859-2", "iso8859-2"),
    "ko": ("euc-kr", "euc_kr"),
    "ru": ("windows-1251", "cp1251"),
    "sr": ("windows-1251", "cp1251"),
    "th": ("tis-620", "tis-620"),
    "vi": ("utf-8", "utf-8-sig"),  # Vietnamese legacy encodings are rare on the web; a BOM is the common quirk
}
LEGACY_PAGE_INDEX = 1
WARC_FILES_PER_LANGUAGE = 2
WARC_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
_UUID_NAMESPACE = uuid.UUID("6f1c2a4e-2b1d-5c55-9a57-6d656c6c6121")
# The ways a content image's URL is written, cycled over the images of a language so every form appears.
URL_STYLES = ("absolute", "relative", "root_relative", "protocol_relative", "srcset", "data_src", "picture")
CONTENT_KINDS = frozenset({"content"})
# Served at an image path as image/jpeg: the fetcher must not trust the Content-Type.
FAKE_IMAGE_HTML = b"<!DOCTYPE html><html><head><title>Gallery</title></head><body>Image not available.</body></html>\n"
ROBOTS_TXT = b"User-agent: *\nDisallow: /private/\nAllow: /\n"


@dataclass(frozen=True)
class DemoImage:
    """One ``<img>`` on one page, with the URL an extractor should resolve and what it is there for.

    ``kind`` is ``content`` for a native, culture-specific pair a good pipeline keeps; anything else names the
    noise it stands for (``logo``, ``tracking_pixel``, ``filename_alt``, ``broken``, ``fake_image``...).
    ``file`` is the path under the site folder, None where the URL is meant to 404.
    """

    language: str
    page_url: str
    image_url: str
    alt: str | None
    kind: str
    file: str | None
    url_style: str = "absolute"
    alt_language: str | None = None


@dataclass(frozen=True)
class DemoPage:
    """One HTML page: its (fake) URL, encoded bytes and the charset they are encoded in."""

    language: str
    url: str
    topic: str
    title: str
    charset: str
    html: bytes


@dataclass
class DemoSite:
    """What :func:`build_demo_site` made: pages (for the WARCs) and images (served on loopback), per language."""

    site_dir: Path
    base_url: str
    languages: tuple[str, ...]
    pages: dict[str, list[DemoPage]] = field(default_factory=dict)
    images: dict[str, list[DemoImage]] = field(default_factory=dict)

    def content_images(self, language: str) -> list[DemoImage]:
        """The native content pairs of a language (what a good pipeline keeps, duplicates included once)."""
        return [image for image in self.images[language] if image.kind in CONTENT_KINDS]


# -- the hand-written corpus ------------------------------------------------------------------------------------


@cache
def _load_language(code: str) -> dict:
    path = CORPUS_DIR / f"{code}.json"
    if not path.exists():
        raise ValueError(f"no demo corpus for language {code!r} (expected {path})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_corpus(code: str) -> dict:
    """The hand-written corpus of one language, as stored in ``corpus/<code>.json``."""
    return _load_language(code)


def corpus_languages() -> list[str]:
    """Codes of the languages that have a demo corpus."""
    return sorted(p.stem for p in CORPUS_DIR.glob("*.json") if p.stem != "en")


def english_sentences() -> list[str]:
    """Detailed English image descriptions (what a captioner writes), for tokenizers and tiny translators."""
    return list(_load_language("en")["sentences"])


def demo_texts(languages: Sequence[str]) -> list[str]:
    """Every native title, paragraph, alt text, caption and extra sentence of ``languages``, then the English."""
    texts: list[str] = []
    for code in languages:
        corpus = _load_language(code)
        for page in corpus["pages"]:
            texts.append(page["title"])
            texts.extend(page["paragraphs"])
            for image in page["images"]:
                texts.append(image["alt"])
                if image.get("caption"):
                    texts.append(image["caption"])
        texts.extend(corpus["extra_sentences"])
    texts.extend(english_sentences())
    return texts


# -- pages --------------------------------------------------------------------------------------------------------


@dataclass
class _ImageFile:
    """An image file to generate: how to draw it and how to encode it."""

    name: str
    recipe: str  # content | variant | near_duplicate | cmyk | alpha | logo | icon | pixel | tiny | fake
    source: str = ""  # the content picture a variant is drawn from
    label: str = ""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


class _PageBuilder:
    """Builds the pages of one language and records the images and files they need."""

    def __init__(self, code: str, base_url: str) -> None:
        self.code = code
        self.base_url = base_url.rstrip("/")
        self.corpus = _load_language(code)
        self.files: dict[str, _ImageFile] = {}
        self.images: list[DemoImage] = []
        self.style_counter = 0

    # URLs: `name` is a file name under <code>/img/.
    def absolute(self, name: str) -> str:
        return f"{self.base_url}/{self.code}/img/{name}"

    def need(self, name: str, recipe: str, source: str = "", label: str = "") -> str:
        self.files.setdefault(name, _ImageFile(name, recipe, source, label or name))
        return f"{self.code}/img/{name}"

    def img(
        self,
        page_url: str,
        name: str | None,
        alt: str | None,
        kind: str,
        *,
        src: str | None = None,
        extra: str = "",
        alt_language: str | None = None,
        file_name: str | None = None,
    ) -> str:
        """An ``<img>`` tag written with an absolute URL, recorded as a :class:`DemoImage`."""
        url = self.absolute(name) if name else ""
        self.images.append(
            DemoImage(
                self.code,
                page_url,
                url,
                alt,
                kind,
                f"{self.code}/img/{file_name}" if file_name else None,
                "absolute",
                alt_language,
            )
        )
        alt_attr = "" if alt is None else f' alt="{_esc(alt)}"'
        return f'<img src="{_esc(src or url)}"{alt_attr}{extra}>'

    def content_figure(self, page_url: str, image: dict, picture_name: str, recipe: str) -> str:
        """A content ``<figure>``; its URL is written in the next of :data:`URL_STYLES`."""
        style = URL_STYLES[self.style_counter % len(URL_STYLES)]
        self.style_counter += 1
        ext = ".png" if recipe == "alpha" else ".jpg"
        file_name = picture_name + ext
        self.need(file_name, recipe, source=picture_name, label=image["name"])
        url = self.absolute(file_name)
        self.images.append(
            DemoImage(self.code, page_url, url, image["alt"], "content", f"{self.code}/img/{file_name}", style)
        )
        alt = _esc(image["alt"])
        if style == "absolute":
            tag = f'<img src="{url}" alt="{alt}" width="640" height="480">'
        elif style == "relative":
            tag = f'<img src="img/{file_name}" alt="{alt}">'
        elif style == "root_relative":
            tag = f'<img src="/{self.code}/img/{file_name}" alt="{alt}">'
        elif style == "protocol_relative":
            tag = f'<img src="//{urlsplit(self.base_url).netloc}/{self.code}/img/{file_name}" alt="{alt}">'
        elif style == "srcset":
            small = self.need(f"{picture_name}-480w.jpg", "variant", source=picture_name)
            tag = (
                f'<img src="img/{file_name}" srcset="/{small} 480w, img/{file_name} 640w" '
                f'sizes="(max-width: 600px) 480px, 640px" alt="{alt}">'
            )
        elif style == "data_src":
            placeholder = self.need("placeholder.gif", "pixel")
            tag = f'<img class="lazy" src="/{placeholder}" data-src="img/{file_name}" alt="{alt}" loading="lazy">'
        else:
            small = self.need(f"{picture_name}-480w.jpg", "variant", source=picture_name)
            tag = (
                f'<picture><source media="(max-width: 600px)" srcset="/{small}">'
                f'<img src="img/{file_name}" alt="{alt}"></picture>'
            )
        caption = f"<figcaption>{_esc(image['caption'])}</figcaption>" if image.get("caption") else ""
        return f"<figure>{tag}{caption}</figure>"

    def noise(self, index: int, page_url: str, pages: list[dict]) -> list[str]:
        """The noisy images of page ``index`` (the pattern repeats every six pages)."""
        corpus, tags = self.corpus, []
        slot = index % 6
        host = urlsplit(page_url).netloc
        if slot == 0:
            self.need("banner-wide.jpg", "content", label="banner")
            tags.append(self.img(page_url, "banner-wide.jpg", "", "empty_alt", file_name="banner-wide.jpg"))
            self.need("ad-sidebar.jpg", "content", label="ad")
            tags.append(self.img(page_url, "ad-sidebar.jpg", None, "missing_alt", file_name="ad-sidebar.jpg"))
            self.need("photo-of-the-day.jpg", "content", label="photo of the day")
            tags.append(
                self.img(
                    page_url,
                    "photo-of-the-day.jpg",
                    "Photo of the day",
                    "english_alt",
                    alt_language="en",
                    file_name="photo-of-the-day.jpg",
                )
            )
        elif slot == 1:
            for file_name, alt in (("IMG_2041.jpg", "IMG_2041.jpg"), ("dsc00123.jpg", "dsc00123.JPG")):
                self.need(file_name, "content", label=file_name)
                tags.append(self.img(page_url, file_name, alt, "filename_alt", file_name=file_name))
        elif slot == 2:
            self.need("gallery-17.jpg", "content", label="gallery 17")
            tags.append(
                self.img(
                    page_url,
                    "gallery-17.jpg",
                    f"https://{host}/media/gallery-17.jpg",
                    "url_alt",
                    file_name="gallery-17.jpg",
                )
            )
            self.need("year-2024.jpg", "content", label="2024")
            tags.append(self.img(page_url, "year-2024.jpg", "2024", "number_alt", file_name="year-2024.jpg"))
            self.need("snapshot.jpg", "content", label="snapshot")
            tags.append(self.img(page_url, "snapshot.jpg", corpus["short_alt"], "short_alt", file_name="snapshot.jpg"))
            first = pages[0]["images"][0]
            copy_name = f"{first['name']}-copy.jpg"
            self.need(copy_name, "near_duplicate", source=first["name"])
            tags.append(self.img(page_url, copy_name, first["alt"], "near_duplicate", file_name=copy_name))
        elif slot == 3:
            first = pages[0]["images"][0]
            tags.append(
                self.img(page_url, f"{first['name']}.jpg", first["alt"], "duplicate", file_name=f"{first['name']}.jpg")
            )
            other = pages[1]["images"][0]
            tags.append(
                self.img(
                    page_url,
                    f"{other['name']}.jpg",
                    pages[1]["title"],
                    "different_alt",
                    file_name=f"{other['name']}.jpg",
                )
            )
        elif slot == 4:
            for related in corpus["related_alts"]:
                file_name = f"related-{related['language']}.jpg"
                self.need(file_name, "content", label=f"related {related['language']}")
                tags.append(
                    self.img(
                        page_url,
                        file_name,
                        related["alt"],
                        "related_language",
                        alt_language=related["language"],
                        file_name=file_name,
                    )
                )
        else:
            tags.append(self.img(page_url, "deleted-photo.jpg", pages[5]["title"], "broken"))
            self.need("photo-gallery.jpg", "fake")
            tags.append(
                self.img(page_url, "photo-gallery.jpg", pages[4]["title"], "fake_image", file_name="photo-gallery.jpg")
            )
            self.need("thumb-32.jpg", "tiny", label="thumb")
            tags.append(
                self.img(
                    page_url,
                    "thumb-32.jpg",
                    pages[2]["title"],
                    "too_small",
                    file_name="thumb-32.jpg",
                    extra=' width="32" height="32"',
                )
            )
        return tags

    def page(self, index: int, pages: list[dict]) -> DemoPage:
        corpus, page = self.corpus, pages[index]
        page_url = page["url"]
        host = urlsplit(page_url).netloc
        site_name = corpus["sites"][host]
        label, codec = LEGACY_CHARSETS[self.code] if index == LEGACY_PAGE_INDEX else ("utf-8", "utf-8")
        body: list[str] = []
        images = page["images"]
        for number, paragraph in enumerate(page["paragraphs"]):
            body.append(f"<p>{_esc(paragraph)}</p>")
            # Spread the figures between paragraphs, the rest after the last one.
            if number < len(page["paragraphs"]) - 1 and number < len(images):
                body.append(self._figure(index, number, page_url, images))
        for number in range(len(page["paragraphs"]) - 1, len(images)):
            body.append(self._figure(index, number, page_url, images))
        noise = self.noise(index, page_url, pages)
        self.need("logo.png", "logo", label=site_name)
        logo = self.img(
            page_url,
            "logo.png",
            corpus["logo_alt"],
            "logo",
            src="img/logo.png",
            extra=' width="200" height="60"',
            file_name="logo.png",
        )
        self.need("facebook.png", "icon", label="f")
        self.need("share.png", "icon", label="s")
        social = [
            self.img(
                page_url,
                "facebook.png",
                "Facebook",
                "social_icon",
                src="/" + f"{self.code}/img/facebook.png",
                file_name="facebook.png",
            ),
            self.img(page_url, "share.png", "icon", "social_icon", file_name="share.png"),
        ]
        self.need("pixel.gif", "pixel")
        pixel = self.img(
            page_url,
            "pixel.gif",
            "",
            "tracking_pixel",
            src=f"{self.absolute('pixel.gif')}?page={index}",
            extra=' width="1" height="1"',
            file_name="pixel.gif",
        )
        nav = "".join(
            f'<li><a href="https://{host}/{section}/">{_esc(text)}</a></li>'
            for section, text in zip(("news", "food", "travel", "culture"), corpus["nav"], strict=True)
        )
        lang = page.get("html_lang", corpus["html_lang"])
        meta_charset = f'<meta charset="{label}">'
        document = (
            "<!DOCTYPE html>\n"
            f'<html lang="{lang}">\n<head>\n{meta_charset}\n'
            f"<title>{_esc(page['title'])} | {_esc(site_name)}</title>\n"
            f'<base href="{self.base_url}/{self.code}/">\n'
            f'<meta property="og:locale" content="{corpus["og_locale"]}">\n'
            f'<meta property="og:title" content="{_esc(page["title"])}">\n'
            f'<meta property="og:site_name" content="{_esc(site_name)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="stylesheet" href="https://{host}/static/site.css">\n'
            "</head>\n<body>\n"
            f'<header class="site-header"><a href="https://{host}/">{logo}</a>'
            f"<nav><ul>{nav}</ul></nav></header>\n"
            f'<main><article class="topic-{page["topic"]}">\n<h1>{_esc(page["title"])}</h1>\n'
            + "\n".join(body)
            + '\n</article>\n<aside class="sidebar">'
            + "".join(noise)
            + "</aside>\n</main>\n"
            f'<footer><p>{_esc(corpus["footer"])}</p><div class="social">{"".join(social)}</div>{pixel}</footer>\n'
            "<script>window.dataLayer = window.dataLayer || [];</script>\n"
            "</body>\n</html>\n"
        )
        encoded = document.encode(codec, errors="xmlcharrefreplace")
        return DemoPage(self.code, page_url, page["topic"], page["title"], label, encoded)

    def _figure(self, page_index: int, number: int, page_url: str, images: list[dict]) -> str:
        image = images[number]
        last = number == len(images) - 1
        recipe = "content"
        if last and page_index == 2:
            recipe = "cmyk"
        elif last and page_index == 3:
            recipe = "alpha"
        return self.content_figure(page_url, image, image["name"], recipe)


# -- images -------------------------------------------------------------------------------------------------------


def _rng(*parts: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big"))


def _draw_picture(code: str, name: str, label: str) -> Image.Image:
    """A deterministic picture: coloured shapes on a background and the entity name, so every image differs."""
    rng = _rng(code, name)
    width, height = rng.randrange(320, 641, 16), rng.randrange(240, 481, 16)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(40, 220) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(4, 9)):
        x0, y0 = rng.randrange(0, width - 40), rng.randrange(0, height - 40)
        x1, y1 = x0 + rng.randrange(30, width // 2), y0 + rng.randrange(30, height // 2)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    font = _font(22)
    draw.rectangle((0, height - 40, width, height), fill=(255, 255, 255))
    draw.text((10, height - 34), f"{code}: {label}"[:48], fill=(0, 0, 0), font=font)
    return image


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _render(code: str, spec: _ImageFile) -> bytes:
    if spec.recipe == "fake":
        return (
            b"<!DOCTYPE html><html><head><title>Gallery</title></head><body><p>Image not available.</p></body></html>\n"
        )
    if spec.recipe in {"pixel"}:
        return _encode(Image.new("P", (1, 1), 0), "GIF", transparency=0)
    if spec.recipe == "logo":
        logo = Image.new("RGB", (200, 60), (20, 60, 140))
        ImageDraw.Draw(logo).text((10, 18), spec.label[:20], fill=(255, 255, 255), font=_font(18))
        return _encode(logo, "PNG", optimize=False)
    if spec.recipe == "icon":
        icon = Image.new("RGB", (32, 32), (59, 89, 152))
        ImageDraw.Draw(icon).text((11, 6), spec.label, fill=(255, 255, 255), font=_font(18))
        return _encode(icon, "PNG", optimize=False)
    if spec.recipe == "tiny":
        return _encode(_draw_picture(code, spec.name, spec.label).resize((32, 32)), "JPEG", quality=85)
    picture = _draw_picture(code, spec.source or spec.name, spec.label)
    if spec.recipe == "variant":
        small = picture.resize((480, picture.height * 480 // picture.width))
        return _encode(small, "JPEG", quality=80)
    if spec.recipe == "near_duplicate":
        smaller = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4))
        return _encode(smaller, "JPEG", quality=60)
    if spec.recipe == "cmyk":
        return _encode(picture.convert("CMYK"), "JPEG", quality=85)
    if spec.recipe == "alpha":
        rgba = picture.convert("RGBA")
        alpha = Image.linear_gradient("L").resize(picture.size)
        rgba.putalpha(alpha.point(lambda value: 96 + value * 159 // 255))
        return _encode(rgba, "PNG", optimize=False)
    return _encode(picture, "JPEG", quality=85)


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless the file already holds exactly it; True when written."""
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    # Imported here: the text generators serve the GPU check too, on a machine without the lake stack (polars).
    from mella_assets.lib.lake import atomic_write_bytes

    atomic_write_bytes(path, data)
    return True


def scaled_pages(pages: list[dict], copies: int) -> list[dict]:
    """``copies`` times the hand-written pages (benchmarks: the demo corpus at 4x, 16x). Copy ``k > 0`` of a page
    lives under ``/copy-k/`` on the same host and names its pictures ``<name>-ck``, so every copy has new page URLs
    and new, different pictures (drawn from the new name) while the texts, noise and layout stay the same."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, not {copies}")
    out = list(pages)
    for k in range(1, copies):
        for page in pages:
            parts = urlsplit(page["url"])
            images = [{**image, "name": f"{image['name']}-c{k}"} for image in page["images"]]
            out.append({**page, "url": f"{parts.scheme}://{parts.netloc}/copy-{k}{parts.path}", "images": images})
    return out


def build_demo_site(site_dir: Path, base_url: str, languages: Sequence[str], copies: int = 1) -> DemoSite:
    """Generate the pages and the images of ``languages`` for a site served at ``base_url`` from ``site_dir``;
    ``copies`` > 1 scales the corpus (see :func:`scaled_pages`)."""
    site_dir = Path(site_dir)
    site = DemoSite(site_dir=site_dir, base_url=base_url.rstrip("/"), languages=tuple(languages))
    _write_if_changed(site_dir / "robots.txt", ROBOTS_TXT)
    for code in languages:
        builder = _PageBuilder(code, base_url)
        pages = scaled_pages(builder.corpus["pages"], copies)
        site.pages[code] = [builder.page(index, pages) for index in range(len(pages))]
        site.images[code] = builder.images
        for spec in builder.files.values():
            _write_if_changed(site_dir / code / "img" / spec.name, _render(code, spec))
    return site


# -- WARC files ---------------------------------------------------------------------------------------------------


def _http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


class _WarcBuilder:
    """Deterministic WARC records: fixed dates, record ids from uuid5 of (URL, type), gzip members with mtime 0."""

    def __init__(self, file_index: int) -> None:
        self.buffer = io.BytesIO()
        # warcio's own gzip wrapper leaves the header mtime at 0; writing uncompressed and gzipping each member
        # ourselves keeps that guarantee independent of warcio internals.
        self.writer = WARCWriter(io.BytesIO(), gzip=False, warc_version="1.1")
        self.moment = WARC_EPOCH + timedelta(hours=file_index)

    def _tick(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment

    def _record_id(self, uri: str, record_type: str) -> str:
        return f"<urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{uri} {record_type}')}>"

    def _write(self, record) -> None:
        raw = io.BytesIO()
        writer = WARCWriter(raw, gzip=False, warc_version="1.1")
        writer.write_record(record)
        self.buffer.write(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))

    def warcinfo(self, filename: str, info: dict[str, str]) -> None:
        payload = "".join(f"{name}: {value}\r\n" for name, value in info.items()).encode()
        record = self.writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(payload),
            length=len(payload),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Record-ID": self._record_id(filename, "warcinfo"),
                "WARC-Date": self._tick().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "WARC-Filename": filename,
            },
        )
        self._write(record)

    def exchange(self, url: str, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """A request record and its response record."""
        moment = self._tick()
        warc_date = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        parts = urlsplit(url)
        response_id = self._record_id(url, "response")
        request_headers = StatusAndHeaders(
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            [
                ("Host", parts.netloc),
                ("User-Agent", "mella-demo-crawler/1.0"),
                ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ],
            is_http_request=True,
        )
        request = self.writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            length=0,
            http_headers=request_headers,
            warc_headers_dict={
                "WARC-Record-ID": self._record_id(url, "request"),
                "WARC-Date": warc_date,
                "WARC-Concurrent-To": response_id,
            },
        )
        response_headers = StatusAndHeaders(
            status,
            [("Date", _http_date(moment)), ("Server", "nginx"), *headers, ("Content-Length", str(len(body)))],
            protocol="HTTP/1.1",
        )
        response = self.writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            http_headers=response_headers,
            warc_headers_dict={"WARC-Record-ID": response_id, "WARC-Date": warc_date},
        )
        self._write(request)
        self._write(response)


def write_demo_warcs(landing_dir: Path, site: DemoSite) -> dict[str, list[Path]]:
    """Write ``landing_dir/<code>/demo-<code>-NN.warc.gz`` for every language of ``site``; unchanged files stay."""
    written: dict[str, list[Path]] = {}
    for code in site.languages:
        pages = site.pages[code]
        per_file = -(-len(pages) // WARC_FILES_PER_LANGUAGE)
        first_host = urlsplit(pages[0].url).netloc
        content = site.content_images(code)[0]
        image_bytes = (site.site_dir / content.file).read_bytes() if content.file else b""
        paths = []
        for file_index in range(WARC_FILES_PER_LANGUAGE):
            filename = f"demo-{code}-{file_index:02d}.warc.gz"
            builder = _WarcBuilder(file_index)
            builder.warcinfo(
                filename,
                {
                    "software": "mella demo corpus",
                    "format": "WARC File Format 1.1",
                    "description": f"MELLA demo crawl, language {code}",
                    "isPartOf": f"mella-demo-{code}",
                },
            )
            for page in pages[file_index * per_file : (file_index + 1) * per_file]:
                content_type = f"text/html; charset={page.charset}"
                builder.exchange(page.url, "200 OK", [("Content-Type", content_type)], page.html)
            # Responses the extractor must skip: not HTML, not 200.
            if file_index == 0:
                builder.exchange(
                    f"https://{first_host}/robots.txt", "200 OK", [("Content-Type", "text/plain")], ROBOTS_TXT
                )
                builder.exchange(
                    f"https://{first_host}/media/{Path(content.image_url).name}",
                    "200 OK",
                    [("Content-Type", "image/jpeg")],
                    image_bytes,
                )
            else:
                not_found = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>\n"
                builder.exchange(
                    f"https://{first_host}/old/removed-article.html",
                    "404 Not Found",
                    [("Content-Type", "text/html; charset=utf-8")],
                    not_found,
                )
                builder.exchange(
                    f"https://{first_host}/index.php?page=home",
                    "301 Moved Permanently",
                    [("Location", f"https://{first_host}/"), ("Content-Type", "text/html; charset=utf-8")],
                    b"",
                )
            path = Path(landing_dir) / code / filename
            _write_if_changed(path, builder.buffer.getvalue())
            paths.append(path)
        written[code] = paths
    return written


def build_demo_corpus(lake_root: Path, base_url: str, languages: Sequence[str], copies: int = 1) -> DemoSite:
    """The demo site in ``lake_root/demo/site/`` and its WARC files in ``lake_root/landing/<code>/``; ``copies``
    scales the corpus (benchmarks)."""
    lake_root = Path(lake_root)
    site = build_demo_site(lake_root / "demo" / "site", base_url, languages, copies)
    write_demo_warcs(lake_root / "landing", site)
    return site


def warc_bytes(pages: Sequence[tuple[str, str | bytes, list[tuple[str, str]]]]) -> bytes:
    """A gzip WARC with one HTTP 200 HTML response per ``(url, html, extra headers)`` (tests, benchmarks)."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for url, page, extra in pages:
        body = page.encode("utf-8") if isinstance(page, str) else page
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), *extra], protocol="HTTP/1.1"
        )
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))
    return out.getvalue()
