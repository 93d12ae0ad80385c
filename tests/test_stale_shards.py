"""A changed ``MELLA_SHARDS`` leaves the old count's shard files in the lake: the catalog's views (and the yield
funnel built on them) see what ``Lake.read`` sees — the current shards only, and a language's pre-sharding single
file only where it has none of them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mella_assets.languages import LANGUAGES
from mella_assets.lib.catalog import current_files, current_shard_keys, run_sql, yield_funnel
from mella_assets.lib.lake import LakeStore
from mella_assets.resources.lake import Lake
from mella_assets.tables import ALT_TEXT_PAIRS, RAW_CRAWL

CS, RU = LANGUAGES["cs"], LANGUAGES["ru"]


def pages(language: str, shard: str, count: int, candidates: int = 3) -> pl.DataFrame:
    """``count`` raw_crawl pages of one shard, each with ``candidates`` image candidates."""
    return pl.DataFrame(
        {
            "page_url": [f"https://www.example.{language}/{shard}/{n}" for n in range(count)],
            "warc_uri": f"/crawl/{language}-{shard}.warc.gz",
            "images": [
                [{"image_url": f"https://img.example/{shard}/{n}/{i}.jpg"} for i in range(candidates)]
                for n in range(count)
            ],
            "language": language,
        }
    )


def pairs(language: str, shard: str, count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "page_url": [f"https://www.example.{language}/{shard}/{n}" for n in range(count)],
            "image_url": [f"https://img.example/{shard}/{n}/0.jpg" for n in range(count)],
            "alt_text": "Karlův most v mlze",
            "warc_uri": f"/crawl/{language}-{shard}.warc.gz",
            "language": language,
        }
    )


def write_shards(store: LakeStore, count: int, sizes: dict[str, int]) -> None:
    """cs's shard runs under ``count`` shards: shard i holds ``sizes`` pages (+ i), each page one kept alt text."""
    for index, shard in enumerate(current_shard_keys(count)):
        store.write_table("raw_crawl", "cs", pages("cs", shard, sizes["pages"] + index), shard)
        store.write_table("alt_text_pairs", "cs", pairs("cs", shard, sizes["pairs"] + index), shard)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> LakeStore:
    if request.param == "local":
        return LakeStore(tmp_path / "lake")
    request.getfixturevalue("s3")
    return LakeStore(f"s3://mella/stale-{request.node.originalname}", cache_dir=tmp_path / "cache")


def test_views_of_sharded_tables_count_what_the_lake_reads_after_the_shard_count_changes(store, monkeypatch) -> None:
    monkeypatch.setenv("MELLA_SHARDS", "4")
    write_shards(store, 4, {"pages": 10, "pairs": 5})
    # A language written before sharding keeps its single file; cs's old single file is left behind by sharding.
    store.write_table("raw_crawl", "ru", pages("ru", "single", 7))
    store.write_table("raw_crawl", "cs", pages("cs", "single", 100))
    monkeypatch.setenv("MELLA_SHARDS", "2")
    write_shards(store, 2, {"pages": 20, "pairs": 8})  # shards 02 and 03 of the 4-shard run stay behind
    shards = current_shard_keys()
    assert shards == ["00", "01"]
    expected = {
        table: {
            code: store.read_shards(table, code, shards).height
            for code in ("cs", "ru")
            if table == "raw_crawl" or code == "cs"
        }
        for table in ("raw_crawl", "alt_text_pairs")
    }
    assert expected == {"raw_crawl": {"cs": 41, "ru": 7}, "alt_text_pairs": {"cs": 17}}
    for table, by_language in expected.items():
        counted = run_sql(store, f"SELECT language, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")
        assert dict(counted.iter_rows()) == by_language, table
    funnel = yield_funnel(store, "cs").filter(pl.col("crawl") == "all")
    rows = dict(zip(funnel["stage"], funnel["rows"], strict=True))
    assert (rows["pages"], rows["candidates"], rows["kept_alt_texts"]) == (41, 41 * 3, 17)


def test_the_lake_resource_and_the_catalog_agree_when_the_shard_keys_widen(tmp_path: Path, monkeypatch) -> None:
    # 4 -> 101 shards: keys "00".."03" become "000".."100"; shard "01" is not shard "001".
    store = LakeStore(tmp_path / "lake")
    write_shards(store, 4, {"pages": 10, "pairs": 5})
    monkeypatch.setenv("MELLA_SHARDS", "101")
    store.write_table("alt_text_pairs", "cs", pairs("cs", "001", 3), "001")
    lake = Lake(root=str(tmp_path / "lake"))
    assert lake.read(ALT_TEXT_PAIRS, CS).height == 3
    assert run_sql(store, "SELECT count(*) FROM alt_text_pairs").item() == 3
    # Only another count's files: the view keeps its columns and has no rows, as the lake has no current shard.
    assert not lake.has(RAW_CRAWL, CS)
    assert run_sql(store, "SELECT count(*) FROM raw_crawl").item() == 0
    assert "images" in run_sql(store, "SELECT * FROM raw_crawl").columns


def test_current_files_keeps_current_shards_and_single_files_of_unsharded_folders() -> None:
    keys = [
        "tables/t/language=cs/data.parquet",
        "tables/t/language=cs/shard=00/data.parquet",
        "tables/t/language=cs/shard=03/data.parquet",
        "tables/t/language=ru/data.parquet",
        "tables/t/language=ru/shard=02/data.parquet",
        "tables/t/language=hu/shard=01/data.parquet",
        "tables/t/language=hu/shard=05/data.parquet",
    ]
    assert current_files(keys, ["00", "01"]) == [
        "tables/t/language=cs/shard=00/data.parquet",
        "tables/t/language=ru/data.parquet",
        "tables/t/language=hu/shard=01/data.parquet",
    ]
    assert current_shard_keys(4) == ["00", "01", "02", "03"] and current_shard_keys(101)[-1] == "100"
