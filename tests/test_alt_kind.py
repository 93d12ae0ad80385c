"""alt_kind: caption, headline or description from the extraction's evidence; the D_know headline cap; the shares
in d_know's metadata and the dataset card."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mella_assets.crawl.html import extract_page
from mella_assets.dataset.export import dataset_card
from mella_assets.know.alt_kind import (
    alt_kind,
    cap_headlines,
    content_ranks,
    headline_limit,
    kind_shares,
    similarity,
    with_alt_kind,
)
from mella_assets.know.assets import d_know
from mella_assets.resources.lake import Lake


def kinds_of(html: str) -> list[str | None]:
    """The alt kind of each image of a generated page, judged on its raw alt and the extracted evidence."""
    page = extract_page(html.encode(), "https://www.example.cz/")
    return [alt_kind(c.alt_raw, c.link_text, c.nearby_heading, c.caption_markup) for c in page.images]


def test_figure_with_figcaption_and_caption_markup_make_captions() -> None:
    html = """<html><body>
    <figure><img src="/1.jpg" alt="Starý most přes Vltavu"><figcaption>Karlův most ráno</figcaption></figure>
    <div class="wp-caption"><img src="/2.jpg" alt="Katedrála"><p class="wp-caption-text">Sv. Vít</p></div>
    <div><img src="/3.jpg" alt="Trh"><span class="photo-caption">Trh na náměstí</span></div>
    <div><img src="/4.jpg" alt="Trh"><span itemprop="caption">Trh na náměstí</span></div>
    </body></html>"""
    assert kinds_of(html) == ["caption", "caption", "caption", "caption"]


def test_alt_equal_to_its_link_text_or_a_heading_in_its_card_is_a_headline() -> None:
    html = """<html><body><ul>
    <li><a href="/a"><img src="/1.jpg" alt="Vláda schválila rozpočet na příští rok"></a>
        <h3>Vláda schválila rozpočet na příští rok</h3></li>
    <li><a href="/b"><img src="/2.jpg" alt="Povodně zasáhly jižní Čechy">
        <span>Povodně zasáhly jižní Čechy</span></a></li>
    <li><article><a href="/c"><img src="/3.jpg" alt="Muž krmí holuby na náměstí"></a>
        <h3>Holubi a lidé</h3></article></li>
    </ul>
    <figure class="teaser"><a href="/d"><img src="/4.jpg" alt="Nový ředitel galerie"></a>
        <figcaption><h2>Nový ředitel galerie</h2></figcaption></figure>
    </body></html>"""
    # A teaser inside <figure> is still a headline: the alt repeats the title beside it.
    assert kinds_of(html) == ["headline", "headline", "description", "headline"]


def test_near_equal_variants_are_headlines_and_different_texts_are_not() -> None:
    title = "Vláda schválila rozpočet na příští rok"
    assert alt_kind(title.upper() + "!", title, None, None) == "headline"  # case and punctuation
    assert alt_kind("Foto: " + title, None, title, None) == "headline"  # a prefix word: 6 of 7 words
    assert alt_kind("Vláda schválila rozpočet na příští", title, None, None) == "headline"  # cut: 5 of 6
    assert alt_kind("Vláda schválila rozpočet", title, None, None) == "description"  # 3 of 6 words
    assert alt_kind("Rozpočet na příští rok", title, None, "class") == "caption"  # not the title, captioned
    # Scripts without spaces between words compare character pairs.
    assert alt_kind("วัดพระแก้วยามค่ำคืน", None, "วัดพระแก้วยามค่ำคืน!", None) == "headline"
    assert alt_kind("วัดพระแก้ว", None, "ตลาดน้ำดำเนินสะดวก", None) == "description"
    assert alt_kind("경복궁의 가을 풍경", "경복궁의 가을 풍경", None, None) == "headline"
    assert alt_kind(None, "x", "y", "figcaption") is None


def test_similarity_is_the_jaccard_of_words() -> None:
    assert similarity("a b c d", "a b c d") == 1.0
    assert similarity("a b c d", "a b c e") == pytest.approx(3 / 5)
    assert similarity("", "a b c") == 0.0


def test_with_alt_kind_reads_the_evidence_columns_and_kind_shares_count_them() -> None:
    frame = pl.DataFrame(
        {
            "alt_text": ["Nový most", "Nový most", "Les", "Hrad"],
            "link_text": ["Nový most", None, None, None],
            "nearby_heading": [None, None, None, None],
            "caption_markup": [None, None, "figcaption", None],
        }
    )
    judged = with_alt_kind(frame)
    assert judged["alt_kind"].to_list() == ["headline", "description", "caption", "description"]
    assert kind_shares(judged) == {"caption": 0.25, "headline": 0.25, "description": 0.5}
    # Tables extracted before the evidence existed: every alt is a description.
    assert with_alt_kind(frame.select("alt_text"))["alt_kind"].unique().to_list() == ["description"]


def _pairs(headlines: int, others: int) -> pl.DataFrame:
    kinds = ["headline"] * headlines + ["description"] * others
    return pl.DataFrame(
        {
            "image_sha256": [f"{i:064x}" for i in range(len(kinds))],
            "alt_text": [f"Titulek číslo {i}" for i in range(len(kinds))],
            "alt_kind": kinds,
        }
    )


def test_the_headline_cap_is_exact_and_stable_whatever_the_row_order() -> None:
    frame = _pairs(headlines=70, others=30)
    kept, over = cap_headlines(frame, 0.5, content_ranks(frame))
    assert (kept.height, over.height) == (60, 40)
    assert int((kept["alt_kind"] == "headline").sum()) == 30  # 30 of 60: exactly the share
    assert over["alt_kind"].unique().to_list() == ["headline"]

    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=7)
    kept_again, _ = cap_headlines(shuffled, 0.5, content_ranks(shuffled))
    assert sorted(kept_again["alt_text"].to_list()) == sorted(kept["alt_text"].to_list())
    assert kept["alt_text"].to_list() == [t for t in frame["alt_text"].to_list() if t in set(kept["alt_text"])]

    assert cap_headlines(frame, 1.0, content_ranks(frame))[0].height == 100
    assert cap_headlines(frame, 0.0, content_ranks(frame))[0]["alt_kind"].unique().to_list() == ["description"]
    assert [headline_limit(70, 30, share) for share in (0.1, 0.25, 0.7, 0.9)] == [3, 10, 70, 70]


def _stored_pairs(lake: Lake, headlines: int, others: int) -> None:
    pairs = _pairs(headlines, others)
    urls = [f"https://img.example.cz/{i}.jpg" for i in range(pairs.height)]
    lake.store.write_table(
        "alt_text_pairs",
        "cs",
        pairs.select(
            pl.Series("image_url", urls),
            "alt_text",
            "alt_kind",
            pl.lit("https://www.example.cz/").alias("page_url"),
            pl.lit("www.example.cz").alias("domain"),
        ),
    )
    lake.store.write_table(
        "images",
        "cs",
        pairs.select(
            pl.lit("cs").alias("language"),
            pl.Series("image_url", urls),
            "image_sha256",
            pl.lit("0f0f0f0f0f0f0f0f").alias("phash"),
            (pl.lit("images/") + pl.col("image_sha256")).alias("image_key"),
        ),
    )


def test_d_know_carries_alt_kind_and_caps_headlines_by_the_setting(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(root=str(tmp_path / "lake"))
    _stored_pairs(lake, headlines=8, others=2)

    def materialize() -> tuple[pl.DataFrame, dict]:
        result = dg.materialize([d_know], partition_key="cs", resources={"lake": lake})
        event = result.get_asset_materialization_events()[0].materialization
        return lake.read_table("d_know", "cs"), {k: v.value for k, v in event.metadata.items()}

    uncapped, metadata = materialize()
    assert uncapped.height == 10 and metadata["alt_kind_shares"] == {
        "caption": 0.0,
        "headline": 0.8,
        "description": 0.2,
    }

    monkeypatch.setenv("MELLA_DKNOW_MAX_HEADLINE_SHARE", "0.5")
    capped, metadata = materialize()
    again, _ = materialize()
    assert sorted(capped["alt_kind"].to_list()) == ["description"] * 2 + ["headline"] * 2
    assert metadata["rejected_by_reason"] == {"headline_over_mix": 6}
    assert metadata["alt_kind_shares"]["headline"] == 0.5
    assert capped["alt_text"].to_list() == again["alt_text"].to_list()


def test_the_dataset_card_shows_the_alt_kind_shares_of_know_records_per_language() -> None:
    records = pl.DataFrame(
        {
            "language": ["cs", "cs", "cs", "cs", "ko"],
            "source": ["know", "know", "know", "ling", "know"],
            "split": ["train", "train", "test", "train", "test"],
            "image_sha256": ["a", "b", "c", "d", "e"],
            "text": ["x", "y", "z", "w", "v"],
            "domain": ["d.cz"] * 4 + ["d.kr"],
            "alt_kind": ["headline", "caption", "headline", None, "description"],
        }
    )
    card = dataset_card(records, "v1")
    assert "| language | know_records | caption % | headline % | description % | unknown % |" in card
    assert "| cs | 3 | 33.3 | 66.7 | 0.0 | 0.0 |" in card
    assert "| ko | 1 | 0.0 | 0.0 | 100.0 | 0.0 |" in card
