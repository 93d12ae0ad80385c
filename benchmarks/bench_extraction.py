"""WARC -> image candidates: ours (warcio + selectolax/lexbor, the raw_crawl code path) vs warcio + BeautifulSoup
(the naive baseline) and vs bare warcio iteration (the ceiling: reading records, no parsing).

Pages are generated in-process: ~40 KB each, with navigation, scripts, styles, text and 12-20 images in every
form the extractor handles (src, srcset, data-src, <picture>, <base href>, figcaption). Single-threaded, so
pages/s is pages/s/core.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from urllib.parse import urljoin

from benchmarks.harness import Row, compare, measure
from mella_assets.lib.html import extract_warc
from mella_assets.testing.corpus import warc_bytes

WORDS = [
    "Praha",
    "hrad",
    "most",
    "řeka",
    "Vltava",
    "zámek",
    "náměstí",
    "kostel",
    "katedrála",
    "muzeum",
    "galerie",
    "výstava",
    "festival",
    "tradice",
    "kroj",
    "vánoční",
    "trh",
    "velikonoce",
    "pivo",
    "knedlík",
    "guláš",
    "koláč",
    "svíčková",
    "lázně",
    "hory",
    "Šumava",
    "Krkonoše",
    "jezero",
    "les",
    "louka",
]


def make_page(rng: random.Random, index: int, target_bytes: int = 40_000) -> str:
    nav = "".join(f'<li><a href="/sekce/{i}">{rng.choice(WORDS)}</a></li>' for i in range(40))
    style = "<style>" + " ".join(f".c{i}{{margin:{i}px;color:#{i:06x}}}" for i in range(120)) + "</style>"
    script = "<script>var cfg=" + str([rng.random() for _ in range(150)]) + ";</script>"
    parts = [f'<!doctype html><html lang="cs"><head><meta charset="utf-8"><title>Článek {index}</title>']
    parts += [style, script, '<base href="https://cdn.example.cz/media/"></head><body>', f"<nav><ul>{nav}</ul></nav>"]
    images = 0
    while sum(map(len, parts)) < target_bytes:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))
        parts.append(f"<p class='c{rng.randint(0, 119)}'>{text}</p>")
        if images < 20:
            alt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            kind = images % 5
            if kind == 0:
                parts.append(f'<img src="foto-{index}-{images}.jpg" alt="{alt}" width="640" height="480">')
            elif kind == 1:
                parts.append(f'<img srcset="s{images}.jpg 320w, l{images}.jpg 1280w" src="f{images}.jpg" alt="{alt}">')
            elif kind == 2:
                parts.append(f'<img src="blank.gif" data-src="/lazy/{index}-{images}.jpg" alt="{alt}">')
            elif kind == 3:
                parts.append(
                    f'<picture><source srcset="p{images}.webp 1x, p{images}@2x.webp 2x"><img src="p{images}.jpg" '
                    f'alt="{alt}"></picture>'
                )
            else:
                parts.append(f'<figure><img src="/fig/{images}.png"><figcaption>{alt}</figcaption></figure>')
            images += 1
    parts.append("<footer>© 2026</footer></body></html>")
    return "".join(parts)


def build_warc(path: Path, pages: int) -> int:
    rng = random.Random(7)
    records = [(f"https://www.example.cz/clanek/{i}", make_page(rng, i), []) for i in range(pages)]
    path.write_bytes(warc_bytes(records))
    return sum(len(html.encode()) for _, html, _ in records) // pages


def ours(path: Path) -> list[tuple]:
    frame = extract_warc(path)
    return [
        (url, image["image_url"], image["alt_raw"], lang)
        for url, images, lang in frame.select("page_url", "images", "html_lang").iter_rows()
        for image in images
    ]


def beautifulsoup(path: Path) -> list[tuple]:
    """The naive baseline: warcio + BeautifulSoup(html.parser), src resolved against <base href>."""
    from bs4 import BeautifulSoup
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type != "response":
                continue
            url = record.rec_headers.get_header("WARC-Target-URI")
            soup = BeautifulSoup(record.content_stream().read(), "html.parser")
            base = soup.find("base", href=True)
            base_url = urljoin(url, base["href"]) if base else url
            lang = (soup.html.get("lang") or "").lower() if soup.html else ""
            for img in soup.find_all("img"):
                out.append((url, urljoin(base_url, img.get("src") or ""), img.get("alt"), lang))
    return out


def iterate(path: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    count = 0
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type == "response":
                record.content_stream().read()
                count += 1
    return count


def run(quick: bool) -> list[Row]:
    pages = 300 if quick else 2000
    runs = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.warc.gz"
        mean_bytes = build_warc(path, pages)
        candidates = len(ours(path))
        ours_m = measure(lambda: len({t[0] for t in ours(path)}), runs=runs)
        # BeautifulSoup is ~30x slower: fewer runs keep the benchmark short; medians still compare.
        bs4_m = measure(lambda: len({t[0] for t in beautifulsoup(path)}), runs=max(1, runs // 2), warmup=0)
        raw_m = measure(lambda: iterate(path), runs=runs)
    notes = {"pages": pages, "mean_page_bytes": mean_bytes, "candidates": candidates, "threads": 1}
    return [
        compare("extraction (pages/s/core)", "pages/s", ours_m, bs4_m, "warcio + BeautifulSoup", **notes),
        compare("extraction vs bare iteration", "pages/s", ours_m, raw_m, "warcio iteration only", **notes),
    ]
