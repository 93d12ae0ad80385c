"""Range reads of selected WARC records (crawl/range_reads.py) over a miniature crawl: the pages equal whole-WARC
extraction of the same URLs, no WARC is read whole, each record is read once, and a server that says 503 SlowDown
is waited out under one global rate (checked on the server's own log)."""

from __future__ import annotations

import time
from email.utils import formatdate

import polars as pl
import pytest

from mella_assets.cli import main
from mella_assets.crawl.cc_index import select_pages
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.range_reads import (
    MAX_RETRY_AFTER_S,
    HttpSource,
    RecordSpan,
    extract_selection,
    pages_by_language,
    parse_retry_after,
    plan_ranges,
)
from support.mini_cc import RangeServer, build_mini_crawl, upload_folder

LANGUAGES = ("ar", "cs", "ru", "sr", "th")
FAST = {"rate": 200.0, "concurrency": 4}


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return build_mini_crawl(tmp_path_factory.mktemp("cc"), languages=LANGUAGES, pages_per_language=10)


@pytest.fixture(scope="module")
def selection(crawl):
    return select_pages(crawl.root, list(LANGUAGES), crawl=crawl.crawl, shards=2)


@pytest.fixture(scope="module")
def whole(crawl):
    """Every page of the crawl's WARC files, extracted from the whole files."""
    return pl.concat([extract_warc(crawl.warc_path(name)) for name in crawl.warc_files])


def _whole_of(whole: pl.DataFrame, urls) -> pl.DataFrame:
    return whole.filter(pl.col("page_url").is_in(list(urls))).sort("warc_uri", "record_offset")


def test_range_extraction_equals_whole_warc_extraction_of_the_selected_urls(crawl, selection, whole):
    result = extract_selection(selection, str(crawl.root), **FAST)
    assert result.failures.is_empty()
    assert result.pages.height == selection.height
    assert result.pages.equals(_whole_of(whole, selection["url"]))  # warc_uri and record_offset included


def test_http_reads_no_whole_file_and_at_most_1_1x_the_selected_bytes(crawl, whole):
    czech = select_pages(crawl.root, ["cs"], crawl=crawl.crawl)
    with RangeServer(crawl.root) as server:
        result = extract_selection(czech, server.url, **FAST)
        gets = server.warc_gets()
    assert all(get.range is not None and get.status == 206 for get in gets)
    assert sum(get.bytes_sent for get in gets) <= 1.1 * czech["warc_record_length"].sum()
    expected = _whole_of(whole, czech["url"])
    assert result.pages.drop("warc_uri").equals(expected.drop("warc_uri"))
    assert result.pages["warc_uri"].to_list() == [server.url + name for name in czech["warc_filename"]]


def test_neighbouring_records_are_read_in_one_request_within_the_waste_bound():
    spans = [
        RecordSpan("a.warc.gz", 0, 1000),
        RecordSpan("a.warc.gz", 1050, 1000),  # 50 bytes apart: one request
        RecordSpan("a.warc.gz", 2050, 1000),  # adjacent: same request
        RecordSpan("a.warc.gz", 3550, 1000),  # 500 bytes apart: more than 10 % of what the range holds
        RecordSpan("b.warc.gz", 4550, 1000),  # another file
        RecordSpan("a.warc.gz", 0, 1000),  # the same record twice: read once
    ]
    ranges = plan_ranges(spans, max_gap_bytes=8192)
    assert [(r.warc_filename, r.start, r.end, len(r.records)) for r in ranges] == [
        ("a.warc.gz", 0, 3050, 3),
        ("a.warc.gz", 3550, 4550, 1),
        ("b.warc.gz", 4550, 5550, 1),
    ]
    assert len(plan_ranges(spans[:2], max_gap_bytes=10)) == 2


def test_languages_sharing_warc_files_read_each_record_once(crawl, selection):
    # Every language's pages sit in the same three files; one Czech record is also selected for Serbian.
    shared = selection.filter(pl.col("language") == "cs").head(1).with_columns(language=pl.lit("sr"))
    doubled = pl.concat([selection, shared])
    with RangeServer(crawl.root) as server:
        result = extract_selection(doubled, server.url, **FAST)
        gets = server.warc_gets()
    assert result.read.records_read == selection.height
    read = [(get.path, *map(int, get.range.removeprefix("bytes=").split("-"))) for get in gets]
    for record in selection.iter_rows(named=True):
        start, end = record["warc_record_offset"], record["warc_record_offset"] + record["warc_record_length"] - 1
        covering = [r for r in read if r[0] == "/" + record["warc_filename"] and r[1] <= start and end <= r[2]]
        assert len(covering) == 1, record["url"]
    by_language = pages_by_language(result.pages, doubled, HttpSource(server.url))
    assert by_language.height == doubled.height
    url = shared["url"][0]
    assert sorted(by_language.filter(pl.col("page_url") == url)["language"]) == ["cs", "sr"]


def test_s3_range_reads_give_the_same_pages(crawl, selection, whole, s3):
    upload_folder(crawl.root, "mella", "cc-range", s3.endpoint)
    result = extract_selection(selection, "s3://mella/cc-range", **FAST)
    assert result.failures.is_empty()
    assert result.pages.drop("warc_uri").equals(_whole_of(whole, selection["url"]).drop("warc_uri"))
    assert result.pages["warc_uri"][0].startswith("s3://mella/cc-range/crawl-data/")


def test_slow_down_is_waited_out_and_the_global_rate_holds(crawl):
    serbian = select_pages(crawl.root, ["sr"], crawl=crawl.crawl)
    rate, retry_after = 8.0, 1.0
    with RangeServer(crawl.root) as server:
        server.answers.extend([(503, (("Retry-After", "1"),))] * 2)
        result = extract_selection(serbian, server.url, rate=rate, concurrency=4, max_gap_bytes=0)
        gets = sorted(server.warc_gets(), key=lambda get: get.arrived)
    assert result.failures.is_empty() and result.read.records_read == serbian.height
    assert result.read.retries == 2
    slow_downs = [get for get in gets if get.status == 503]
    assert len(slow_downs) == 2
    for refused in slow_downs:
        retried = next(get for get in gets if get.range == refused.range and get.status == 206)
        assert retried.arrived - refused.arrived >= retry_after - 0.05
        # Every request, not only the refused one, waits: none arrives later than those already under way.
        assert not [get for get in gets if refused.arrived + 0.3 < get.arrived < refused.arrived + retry_after - 0.05]
    # Never more than the configured rate in any one-second window (one token: starts are 1/rate apart).
    arrivals = [get.arrived for get in gets]
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= rate + 1


def test_failed_reads_are_recorded_per_record_and_the_rest_is_read(crawl, selection):
    broken = selection["warc_filename"][0]
    missing = pl.DataFrame(
        {"warc_filename": ["crawl-data/none.warc.gz"], "warc_record_offset": [0], "warc_record_length": [100]}
    )
    with RangeServer(crawl.root) as server:
        server.failing.add("/" + broken)
        started = time.monotonic()
        result = extract_selection(
            pl.concat([selection.select(missing.columns), missing]), server.url, max_attempts=2, **FAST
        )
        elapsed = time.monotonic() - started
    failed = result.failures
    in_broken = selection.filter(pl.col("warc_filename") == broken).height
    assert sorted(set(failed["reason"])) == ["http_404", "http_500"]
    assert failed.filter(pl.col("reason") == "http_500").height == in_broken
    assert set(failed.filter(pl.col("reason") == "http_500")["attempts"]) == {2}
    assert failed.filter(pl.col("reason") == "http_404")["attempts"].to_list() == [1]  # not worth a retry
    assert result.pages.height == selection.height - in_broken
    assert elapsed < 10


def test_retry_after_takes_seconds_or_a_date_and_is_capped():
    now = time.time()
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(formatdate(now + 5, usegmt=True), now=now) == pytest.approx(5.0, abs=1.0)
    assert parse_retry_after("99999") == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon") is None
    assert parse_retry_after("٣") is None  # an Arabic-Indic digit is no HTTP number


def test_extract_cli_on_a_selection_writes_the_columns_of_whole_warc_extraction(crawl, tmp_path):
    selection_file, by_range, by_file = tmp_path / "sel.parquet", tmp_path / "range.parquet", tmp_path / "whole.parquet"
    base = ["--index", str(crawl.root), "--crawl", crawl.crawl, "-o", str(selection_file)]
    assert main(["cc-select", *base, "--languages", "th,ar"]) == 0
    assert (
        main(["extract", "--selection", str(selection_file), "--warc-base", str(crawl.root), "-o", str(by_range)]) == 0
    )
    warcs = [str(crawl.warc_path(name)) for name in crawl.warc_files]
    assert main(["extract", *warcs, "-o", str(by_file)]) == 0
    urls = pl.read_parquet(selection_file)["url"]
    ranged = pl.read_parquet(by_range)
    whole = pl.read_parquet(by_file).filter(pl.col("page_url").is_in(urls.to_list()))
    assert ranged.columns == whole.columns
    assert ranged.sort(ranged.columns).equals(whole.sort(whole.columns))
    assert ranged.height > 0
    assert main(["extract", "--selection", str(selection_file), "-o", str(by_range)]) == 2  # no --warc-base
