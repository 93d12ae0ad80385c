"""Small real inputs for the dataset tests: Pillow pictures, their re-encoded copies, D_know / D_ling tables."""

from __future__ import annotations

import io
import random

import polars as pl
from PIL import Image, ImageDraw

from mella_assets.know.images import ValidatedImage, image_key, validate_image
from mella_assets.lib.lake import LakeStore


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of random coloured rectangles and ellipses: distinct seeds give visually distinct pictures."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randrange(20, 160), y0 + rng.randrange(20, 120))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def near_copy(data: bytes) -> bytes:
    """The same picture resized to 3/4 and re-encoded at a lower JPEG quality (a typical web re-upload)."""
    image = Image.open(io.BytesIO(data))
    smaller = image.resize((image.width * 3 // 4, image.height * 3 // 4))
    buffer = io.BytesIO()
    smaller.save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def store_image(store: LakeStore, data: bytes) -> ValidatedImage:
    """Validate and re-encode ``data`` as the images asset does, and put it in the lake."""
    checked = validate_image(data)
    assert isinstance(checked, ValidatedImage), checked
    store.put_bytes(image_key(checked.sha256, checked.ext), checked.data)
    return checked


def know_frame(
    language: str, images: list[ValidatedImage], alt_texts: list[str], domain: str = "a.example"
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "language": language,
            "image_sha256": [i.sha256 for i in images],
            "image_key": [image_key(i.sha256, i.ext) for i in images],
            "phash": [i.phash for i in images],
            "alt_text": alt_texts,
            "keywords": [text.lower().split()[:3] for text in alt_texts],
            "page_url": [f"https://{domain}/page-{n}" for n in range(len(images))],
            "domain": domain,
            "image_url": [f"https://{domain}/img/{i.sha256[:8]}.jpg" for i in images],
        },
        schema_overrides={"keywords": pl.List(pl.String)},
    )


def ling_frame(language: str, images: list[ValidatedImage], texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "language": language,
            "image_sha256": [i.sha256 for i in images],
            "image_key": [image_key(i.sha256, i.ext) for i in images],
            "phash": [i.phash for i in images],
            "text": texts,
            "caption_en": [f"English caption {n}" for n in range(len(images))],
        }
    )


CZECH_ALTS = [
    "Pražský hrad v zimě se zasněženými střechami",
    "Karlův most ráno v mlze nad Vltavou",
    "Svíčková na smetaně s knedlíkem a brusinkami",
    "Staroměstský orloj na radnici v Praze",
    "Vánoční trh na Staroměstském náměstí večer",
    "Hrad Karlštejn uprostřed podzimních lesů",
    "Lázně v Karlových Varech a kolonáda",
    "Kostnice v Sedlci u Kutné Hory",
    "Velikonoční kraslice malované ve Strážnici",
    "Jihočeské rybníky při západu slunce",
    "Moravské vinice na jižní Moravě v létě",
    "Tančící dům na nábřeží Vltavy",
]
CZECH_CAPTIONS = [
    "Na obrázku je velká stará budova s mnoha okny a červenou střechou, před ní stojí lidé.",
    "Fotografie ukazuje kamenný most přes řeku, na kterém jdou chodci v ranní mlze.",
    "Na talíři leží plátky masa s hustou omáčkou, knedlíky a lžička brusinek.",
    "Vidíme složité astronomické hodiny na věži s figurkami a zlatými ručičkami.",
    "Náměstí je plné dřevěných stánků, světel a lidí, kteří nakupují dárky.",
    "Středověký hrad stojí na kopci a kolem něj jsou stromy v podzimních barvách.",
    "Dlouhá kolonáda se sloupy a lidé, kteří pijí minerální vodu z pohárků.",
    "Uvnitř kaple visí lustr a ozdoby poskládané z lidských kostí.",
    "Na stole leží barevně malovaná vajíčka s tradičními vzory.",
    "Klidná hladina rybníka odráží oranžové nebe při západu slunce.",
    "Řady vinné révy se táhnou po mírném svahu pod modrým nebem.",
    "Moderní budova s prohnutou fasádou stojí vedle klasických domů u řeky.",
]
