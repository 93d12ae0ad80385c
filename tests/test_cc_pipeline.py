"""Common Crawl through the pipeline (issue #18): a crawl registered as a ``crawls`` partition is selected from its
columnar index by ``cc_selection`` (stored by crawl, language and shard), and every ``raw_crawl`` shard reads its
selected records by HTTP range: the pages equal whole-WARC extraction of the selected URLs, and no WARC file is
fetched whole."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from mella_assets.crawl.assets import cc_selection, crawl_sources, raw_crawl
from mella_assets.crawl.html import extract_warc
from mella_assets.definitions import materialize_language
from mella_assets.lib.lake import LakeStore
from mella_assets.partitions import CRAWL_PARTITIONS, SHARD_PARTITIONS
from mella_assets.resources.lake import Lake
from support.mini_cc import RangeServer, build_mini_crawl

LANGUAGES = ("cs", "ru")


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return build_mini_crawl(tmp_path_factory.mktemp("cc"), languages=LANGUAGES, pages_per_language=10)


def select_and_extract_czech(crawl, lake_root, monkeypatch, languages: list[str]):
    """Register the crawl, run `cc_selection` for ``languages`` and Czech's sources and `raw_crawl` shards with the
    WARCs served by a loopback Range server; gives the language's runs, the server's WARC GETs and its URL."""
    lake = Lake(root=str(lake_root))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CRAWL_PARTITIONS.name, [crawl.crawl])
    with RangeServer(crawl.root) as server:
        monkeypatch.setenv("MELLA_CC_INDEX", str(crawl.root))
        monkeypatch.setenv("MELLA_CC_WARC_BASE", server.url)
        monkeypatch.setenv("MELLA_CC_RATE", "200")
        selected = dg.materialize(
            [cc_selection], partition_key=crawl.crawl, resources={"lake": lake}, instance=instance,
            run_config={"ops": {"cc_selection": {"config": {"languages": languages}}}},
        )  # fmt: skip
        assert selected.success
        runs = materialize_language("cs", [crawl_sources, raw_crawl], resources={"lake": lake}, instance=instance)
        gets = server.warc_gets()
    assert runs.success
    return runs, gets, server.url


def test_a_registered_crawl_feeds_raw_crawl_shards_by_range_reads_only(crawl, tmp_path, monkeypatch):
    runs, gets, served_from = select_and_extract_czech(crawl, tmp_path / "lake", monkeypatch, list(LANGUAGES))

    store = LakeStore(tmp_path / "lake")
    selection = store.read_table_all_languages("cc_selection")
    assert sorted(selection["url"]) == sorted(c.url for c in crawl.expected(list(LANGUAGES)))
    assert set(selection["shard"]) <= set(SHARD_PARTITIONS.get_partition_keys())
    assert set(selection["crawl"]) == {crawl.crawl}
    czech = selection.filter(pl.col("language") == "cs")

    # Range reads only: every request names a range, and no more bytes than the selected records (+10 %).
    assert gets and all(get.range is not None and get.status == 206 for get in gets)
    assert sum(get.bytes_sent for get in gets) <= 1.1 * czech["warc_record_length"].sum()
    # The pages of the shards are whole-file extraction of the selected Czech URLs, warc_uri aside (the server's).
    pages = store.read_table("raw_crawl", "cs").sort("warc_uri", "record_offset")
    whole = pl.concat([extract_warc(crawl.warc_path(name)) for name in crawl.warc_files])
    expected = whole.filter(pl.col("page_url").is_in(czech["url"].to_list())).sort("warc_uri", "record_offset")
    assert pages.height == czech.height > 0
    assert pages.drop("warc_uri", "language").equals(expected.drop("warc_uri"))
    assert sorted(pages["warc_uri"]) == sorted(served_from + name for name in czech["warc_filename"])
    metadata = runs.asset_materializations_for_node("raw_crawl")[0].metadata
    assert metadata["selected_records"].value == czech.height


def test_cc_select_register_adds_the_crawl_partition_the_pipeline_selects(crawl, tmp_path):
    from mella_assets.cli import main

    home = tmp_path / "home"
    args = ["cc-select", "--index", str(crawl.root), "--crawl", crawl.crawl, "--languages", "cs"]
    assert main([*args, "--register", "--dagster-home", str(home)]) == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(CRAWL_PARTITIONS.name) == [crawl.crawl]
    # A crawl partition needs its name; and a selection with nowhere to go is a usage error.
    assert main(["cc-select", "--index", str(crawl.root), "--languages", "cs", "--register"]) == 2
    assert main(args) == 2


def test_a_page_in_a_landed_warc_and_in_the_selection_is_read_once(crawl, tmp_path, monkeypatch):
    """A Common Crawl WARC the operator also landed whole: its selected pages come from the landed file (no range
    read of that file) and every page is in raw_crawl once (counted as ``selected_already_read``)."""
    landed = crawl.warc_files[0]
    lake_root = tmp_path / "lake"
    (lake_root / "landing" / "cs").mkdir(parents=True)
    (lake_root / "landing" / "cs" / "landed.warc.gz").write_bytes(crawl.warc_path(landed).read_bytes())
    runs, gets, _ = select_and_extract_czech(crawl, lake_root, monkeypatch, ["cs"])

    store = LakeStore(lake_root)
    czech = store.read_table_all_languages("cc_selection").filter(pl.col("language") == "cs")
    in_landed = czech.filter(pl.col("warc_filename") == landed)
    assert in_landed.height > 0 and in_landed.height < czech.height  # both routes have pages to give
    pages = store.read_table("raw_crawl", "cs")
    assert pages["page_url"].is_unique().all()
    assert set(czech["url"]) <= set(pages["page_url"])
    from_landed = pages.filter(pl.col("page_url").is_in(in_landed["url"].implode()))
    assert from_landed.height == in_landed.height
    assert all(uri.endswith("/landing/cs/landed.warc.gz") for uri in from_landed["warc_uri"])
    assert gets and not any(get.path.endswith(landed) for get in gets)  # the landed file is never read by range
    metadata = runs.asset_materializations_for_node("raw_crawl")[0].metadata
    assert metadata["selected_already_read"].value == in_landed.height
