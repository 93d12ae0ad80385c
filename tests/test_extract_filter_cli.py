"""`mella extract --language XX --filter`: every candidate with the decision of alt_text_pairs, from its own code."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mella_assets.cli import main
from mella_assets.crawl.assets import crawl_sources, raw_crawl
from mella_assets.definitions import materialize_language
from mella_assets.demo.corpus import warc_bytes
from mella_assets.know.assets import alt_text_pairs
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification

TEASERS = """<html lang="cs"><body><ul>
<li><a href="/a/1"><img src="/i/1.jpg" alt="Vláda schválila rozpočet na příští rok"></a>
    <h3><a href="/a/1">Vláda schválila rozpočet na příští rok</a></h3></li>
<li><a href="/a/2"><img src="/i/2.jpg" alt="Povodně zasáhly jižní Čechy a Vysočinu"></a>
    <a href="/a/2">Povodně zasáhly jižní Čechy a Vysočinu</a></li>
</ul>
<figure><img src="/i/3.jpg" alt="Pražský hrad pokrytý sněhem za úsvitu"><figcaption>Hrad v zimě</figcaption></figure>
<p>Text <img src="/i/4.jpg" alt="Starý muž krmí holuby na Staroměstském náměstí"> a další text.</p>
<img src="/i/5.jpg" alt="logo"><img src="/i/6.jpg" alt="An old man feeding pigeons in the square">
<img src="/i/7.jpg"><img src="/i/8.jpg" alt="IMG_2041.jpg">
<img src="/i/4.jpg" alt="Starý muž krmí holuby na Staroměstském náměstí">
</body></html>"""
# No declared language: the site's other pages decide its prior.
SAME_SITE = """<html><body><img src="/i/9.jpg" alt="Karlův most v ranní mlze nad Vltavou"></body></html>"""
OPTED_OUT = """<html lang="cs"><body><img src="/i/10.jpg" alt="Vánoční trhy na Václavském náměstí"></body></html>"""


def _warcs(folder: Path) -> list[Path]:
    first, second = folder / "a.warc.gz", folder / "b.warc.gz"
    first.write_bytes(warc_bytes([("https://www.example.com/zpravy", TEASERS, [])]))
    second.write_bytes(
        warc_bytes(
            [
                ("https://www.example.com/most", SAME_SITE, []),
                ("https://www.example.com/trhy", OPTED_OUT, [("X-Robots-Tag", "noai")]),
            ]
        )
    )
    return [first, second]


def _materialized(warcs: list[Path], lake: Lake) -> dict:
    for warc in warcs:
        lake.store.put_bytes(f"landing/cs/{warc.name}", warc.read_bytes())
    result = materialize_language(
        "cs",
        [crawl_sources, raw_crawl, alt_text_pairs],
        resources={"lake": lake, "langid": LanguageIdentification()},
    )
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "alt_text_pairs")
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_filter_gives_the_kept_rows_and_reasons_of_alt_text_pairs_on_the_same_warcs(tmp_path: Path) -> None:
    warcs = _warcs(tmp_path)
    lake = Lake(root=str(tmp_path / "lake"))
    metadata = _materialized(warcs, lake)
    out = tmp_path / "judged.parquet"

    assert main(["extract", *map(str, warcs), "--language", "cs", "--filter", "--output", str(out)]) == 0

    judged = pl.read_parquet(out)
    columns = ["page_url", "image_url", "alt_raw", "alt_text", "alt_kind", "page_language", "detected_language"]
    kept = lake.read_table("alt_text_pairs", "cs")
    assert judged.filter(pl.col("kept")).select(columns).equals(kept.select(columns))
    rejects = lake.read_table("alt_text_rejects", "cs")
    key = ["page_url", "image_url", "alt_raw", "reason", "alt_kind"]
    assert (
        judged.filter(~pl.col("kept"))
        .select(key)
        .sort(key, nulls_last=True)
        .equals(rejects.select(key).sort(key, nulls_last=True))
    )
    # What those rows are, in page order: the decision and the kind of each candidate.
    assert judged.select("image_url", "kept", "reason", "alt_kind").rows() == [
        ("https://www.example.com/i/1.jpg", True, None, "headline"),
        ("https://www.example.com/i/2.jpg", True, None, "headline"),
        ("https://www.example.com/i/3.jpg", True, None, "caption"),
        ("https://www.example.com/i/4.jpg", True, None, "description"),
        ("https://www.example.com/i/5.jpg", False, "alt_boilerplate", "description"),
        ("https://www.example.com/i/6.jpg", False, "wrong_language", "description"),
        ("https://www.example.com/i/7.jpg", False, "missing_alt", None),
        ("https://www.example.com/i/8.jpg", False, "alt_is_filename", "description"),
        ("https://www.example.com/i/4.jpg", False, "duplicate_pair", "description"),
        ("https://www.example.com/i/9.jpg", True, None, "description"),
        ("https://www.example.com/i/10.jpg", False, "page_opt_out", None),
    ]
    # The page without a language took its site's prior, in both.
    assert judged.filter(pl.col("image_url").str.ends_with("/9.jpg"))["page_language"].to_list() == ["cs"]
    assert metadata["alt_kind_shares"] == {"caption": 0.2, "headline": 0.4, "description": 0.4}


def test_filter_settings_change_the_decision(tmp_path: Path) -> None:
    warcs = _warcs(tmp_path)
    out = tmp_path / "judged.parquet"
    config = '{"min_chars": {"cs": 40}}'

    assert (
        main(["extract", str(warcs[0]), "--language", "cs", "--filter", "--filter-config", config, "-o", str(out)]) == 0
    )

    judged = pl.read_parquet(out)
    # 40 characters at least: the three alt texts of 37-38 characters become too short.
    assert judged.filter(pl.col("kept"))["image_url"].str.extract(r"/i/(\d+)").to_list() == ["4"]
    assert judged.filter(pl.col("reason") == "alt_too_short").height == 3


def test_missing_warc_is_a_one_line_error_with_exit_code_1(tmp_path: Path, capsys) -> None:
    code = main(["extract", str(tmp_path / "nope.warc.gz"), "--language", "cs", "--filter", "-o", str(tmp_path / "o")])

    assert code == 1
    assert capsys.readouterr().err == f"error: no such WARC file: {tmp_path / 'nope.warc.gz'}\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--filter"],  # no language
        ["--language", "cs"],  # a language without --filter
        ["--filter", "--language", "xx"],  # not a language of the registry
        ["--filter", "--language", "cs", "--filter-config", "{not json"],
        ["--filter", "--language", "cs", "--filter-config", '{"min_wordz": 3}'],
        ["--filter", "--language", "cs", "--no-such-flag"],
    ],
)
def test_bad_flags_exit_with_code_2(tmp_path: Path, flags: list[str]) -> None:
    warc = _warcs(tmp_path)[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", str(warc), *flags, "--output", str(tmp_path / "o.parquet")])
    assert exit_info.value.code == 2
