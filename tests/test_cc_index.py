"""Page selection from Common Crawl's columnar index (crawl/cc_index.py) over a miniature crawl: a local folder, moto
S3 and a loopback HTTP server whose only file list is the crawl's cc-index-table.paths.gz."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from mella_assets.cli import main
from mella_assets.crawl.cc_index import SELECTION_SCHEMA, select_pages, shard_of
from mella_assets.languages import REGISTRY
from support.mini_cc import RangeServer, build_mini_crawl, upload_folder

LANGUAGES = ("ar", "cs", "ru", "sr", "th")


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return build_mini_crawl(tmp_path_factory.mktemp("cc"), languages=LANGUAGES, pages_per_language=10)


def _pairs(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.select("url", "warc_filename", "warc_record_offset", "warc_record_length", "language").rows())


def _expected(crawl, languages=None) -> list[tuple]:
    return sorted((c.url, c.warc_filename, c.offset, c.length, c.expected) for c in crawl.expected(languages))


def test_selection_from_a_folder_returns_exactly_the_seeded_pages(crawl):
    selection = select_pages(crawl.root, list(LANGUAGES), crawl=crawl.crawl, shards=4)
    assert selection.schema == SELECTION_SCHEMA
    assert _pairs(selection) == _expected(crawl)
    # By file and offset: the order range reads want.
    assert selection.select("warc_filename", "warc_record_offset").rows() == sorted(
        selection.select("warc_filename", "warc_record_offset").rows()
    )


def test_only_the_primary_language_counts_and_national_domains_fill_in_undeclared_pages(crawl):
    selection = select_pages(crawl.root, ["cs"], crawl=crawl.crawl)
    by_url = {c.url: c for c in crawl.captures}
    chosen = [by_url[url] for url in selection["url"]]
    assert {c.languages for c in chosen} == {"ces", "ces,eng", None}
    assert all(c.tld == "cz" for c in chosen if c.languages is None)
    left_out = [c for c in crawl.captures if c.url.startswith("https://www.cs-") and c.url not in set(selection["url"])]
    # Czech second (eng,ces), an error page, English on .cz, and an image on .cz: none is a Czech page.
    assert {(c.languages, c.status, c.mime) for c in left_out} == {
        ("eng,ces", 200, "text/html"),
        ("ces", 404, "text/html"),
        ("eng", 200, "text/html"),
        (None, 200, "image/jpeg"),
    }


def test_a_glob_over_every_crawl_gives_the_same_selection_without_a_crawl_name(crawl):
    assert _pairs(select_pages(crawl.root, "sr,th")) == _expected(crawl, ["sr", "th"])


def test_the_shard_is_a_stable_hash_of_the_registered_domain(crawl):
    selection = select_pages(crawl.root, list(LANGUAGES), crawl=crawl.crawl, shards=5)
    domains = {c.url: c.registered_domain for c in crawl.captures}
    assert selection["shard"].to_list() == [shard_of(domains[url], 5) for url in selection["url"]]
    # A site's pages share one shard, and the hash is MD5's first 64 bits: the same in every process and version.
    per_site = selection.with_columns(site=pl.col("url").replace_strict(domains)).group_by("site")
    assert per_site.agg(pl.col("shard").n_unique())["shard"].max() == 1
    assert selection["shard"].n_unique() > 1
    assert [shard_of("novinky.cz", 7), shard_of("rts.rs", 16), shard_of("xn--p1ai", 1000)] == [0, 11, 684]


def test_a_language_common_crawl_cannot_name_is_an_error(crawl):
    unnamed = dataclasses.replace(REGISTRY["cs"], code="xx", iso639_3=())
    with pytest.raises(ValueError, match="no iso639_3"):
        select_pages(crawl.root, {"xx": unnamed}, crawl=crawl.crawl)


def test_selection_over_s3_reads_the_listing_and_the_glob(crawl, s3):
    upload_folder(crawl.root, "mella", "commoncrawl", s3.endpoint)
    listed = select_pages("s3://mella/commoncrawl", list(LANGUAGES), crawl=crawl.crawl, shards=4)
    assert _pairs(listed) == _expected(crawl)
    assert listed.equals(select_pages(crawl.root, list(LANGUAGES), crawl=crawl.crawl, shards=4))
    assert _pairs(select_pages("s3://mella/commoncrawl", ["ru"])) == _expected(crawl, ["ru"])


def test_selection_over_http_reads_only_the_listed_warc_subset(crawl):
    with RangeServer(crawl.root) as server:
        selection = select_pages(server.url, list(LANGUAGES), crawl=crawl.crawl, shards=4)
        paths = {entry.path for entry in server.log}
    assert _pairs(selection) == _expected(crawl)
    assert f"/crawl-data/{crawl.crawl}/cc-index-table.paths.gz" in paths
    assert any("subset=warc/" in path for path in paths)
    assert not any("subset=crawldiagnostics" in path for path in paths)


def test_an_http_index_without_a_crawl_name_is_a_clear_error(crawl):
    with RangeServer(crawl.root) as server, pytest.raises(ValueError, match="needs --crawl"):
        select_pages(server.url, ["cs"])


def test_cc_select_writes_the_selection(crawl, tmp_path, capsys):
    output = tmp_path / "selection.parquet"
    args = ["--index", str(crawl.root), "--crawl", crawl.crawl, "--languages", "cs,sr", "-o", str(output)]
    assert main(["cc-select", *args, "--shards", "3"]) == 0
    written = pl.read_parquet(output)
    assert _pairs(written) == _expected(crawl, ["cs", "sr"])
    assert set(written["shard"]) <= {0, 1, 2}
    assert "pages selected (cs " in capsys.readouterr().err
    assert main(["cc-select", "--index", str(crawl.root), "--languages", "zz", "-o", str(output)]) == 2
