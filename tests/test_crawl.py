"""The crawl assets: incremental extraction per WARC file, opt-out headers, registered external sources."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import polars as pl

from mella_assets.crawl.assets import crawl_sources, raw_crawl
from mella_assets.definitions import materialize_language
from mella_assets.demo.corpus import warc_bytes
from mella_assets.resources.lake import Lake
from support.scripted_site import Route, ScriptedSite


def page(alt: str) -> str:
    return f'<html lang="cs"><body><img src="/img/{len(alt)}.jpg" alt="{alt}"></body></html>'


def materialize(lake: Lake, config: dict | None = None, raw_crawl_config: dict | None = None) -> dict[str, dict]:
    ops = {"crawl_sources": {"config": config}} if config else {}
    if raw_crawl_config:
        ops["raw_crawl"] = {"config": raw_crawl_config}
    run_config = {"ops": ops} if ops else None
    result = materialize_language("cs", [crawl_sources, raw_crawl], resources={"lake": lake}, run_config=run_config)
    return {
        event.asset_key.path[-1]: {k: v.value for k, v in event.metadata.items()}
        for event in result.get_asset_materialization_events()
        for event in [event.materialization]
    }


def test_adding_one_warc_extracts_only_that_file_and_rerun_extracts_none(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    store = lake.store
    store.put_bytes("landing/cs/a.warc.gz", warc_bytes([("http://a.cz/1", page("Pražský hrad v zimě"), [])]))
    first = materialize(lake)["raw_crawl"]
    store.put_bytes("landing/cs/b.warc.gz", warc_bytes([("http://b.cz/1", page("Karlův most ráno"), [])]))
    second = materialize(lake)["raw_crawl"]
    third = materialize(lake)["raw_crawl"]

    counts = [(m["warc_files_extracted"], m["warc_files_cached"], m["html_pages"]) for m in (first, second, third)]
    assert counts == [(1, 0, 1), (1, 1, 2), (0, 2, 2)]
    frame = lake.read_table("raw_crawl", "cs")
    assert frame["page_url"].to_list() == ["http://a.cz/1", "http://b.cz/1"]
    assert frame["warc_uri"].to_list() == [store.uri("landing/cs/a.warc.gz"), store.uri("landing/cs/b.warc.gz")]


def test_x_robots_tag_noai_page_is_recorded_as_opted_out_and_a_cut_warc_is_counted_not_fatal(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    pages = [
        ("http://a.cz/open", page("Staroměstské náměstí"), []),
        ("http://a.cz/closed", page("Vánoční trh"), [("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "noimageai")]),
    ]
    lake.store.put_bytes("landing/cs/a.warc.gz", warc_bytes(pages))
    whole = warc_bytes([("http://c.cz/1", page("Brno"), [])] * 3)
    lake.store.put_bytes("landing/cs/cut.warc.gz", whole[: len(whole) - 40])

    metadata = materialize(lake)["raw_crawl"]

    frame = lake.read_table("raw_crawl", "cs")
    assert frame.select("page_url", "opt_out", "opt_out_source").rows() == [
        ("http://a.cz/open", False, None),
        ("http://a.cz/closed", True, "header"),
        ("http://c.cz/1", False, None),
        ("http://c.cz/1", False, None),
    ]
    assert metadata["opt_out_by_source"] == {"header": 1}
    assert metadata["skipped"]["malformed"] == 1


def test_registered_paths_and_urls_become_external_sources_and_bad_entries_are_rejected(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    local = tmp_path / "elsewhere" / "cc-part.warc.gz"
    local.parent.mkdir()
    local.write_bytes(warc_bytes([("http://local.cz/1", page("Hrad Karlštejn"), [])]))
    remote = warc_bytes([("http://remote.cz/1", page("Kutná Hora"), [])])
    with ScriptedSite({"/crawl/part-1.warc.gz": Route(remote, content_type="application/warc")}) as site:
        registry = "\n".join(
            [
                "# Common Crawl parts for Czech",
                str(local),
                f"{site.base_url}/crawl/part-1.warc.gz",
                f"{site.base_url}/crawl/missing.warc.gz",
                str(tmp_path / "nope.warc.gz"),
                "",
            ]
        )
        lake.store.put_bytes("sources/cs.txt", registry.encode())
        config = {"allowed_networks": ["127.0.0.1/32"]}
        first = materialize(lake, config)
        materialize(lake, config)
        downloads = site.paths().count("/crawl/part-1.warc.gz")
        remote_url = f"{site.base_url}/crawl/part-1.warc.gz"

    sources = lake.read_table("crawl_sources", "cs")
    assert sources.select("uri", "origin").rows() == [
        (local.resolve().as_uri(), "external"),
        (remote_url, "external"),
    ]
    assert downloads == 1  # the second run found the downloaded copy in the lake
    rejects = lake.read_table("crawl_source_rejects", "cs")
    assert rejects.select("reason", "http_status").rows() == [("http_error_404", 404), ("file_not_found", None)]
    assert lake.read_table("raw_crawl", "cs")["page_url"].to_list() == ["http://local.cz/1", "http://remote.cz/1"]
    assert first["crawl_sources"]["files_by_origin"] == {"external": 2}


def test_private_source_url_is_refused_unless_its_network_is_allowed(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    with ScriptedSite({"/x.warc.gz": Route(b"", content_type="application/warc")}) as site:
        lake.store.put_bytes("sources/cs.txt", f"{site.base_url}/x.warc.gz\n".encode())
        materialize(lake)
        assert site.paths() == []
    assert lake.read_table("crawl_source_rejects", "cs")["reason"].to_list() == ["blocked_address"]
    assert pl.DataFrame(lake.read_table("crawl_sources", "cs")).height == 0


def test_nearby_context_is_opt_in_and_switching_it_extracts_again(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    body = '<html lang="cs"><body><p>Pražský hrad v zimě <img src="/img/hrad.jpg"></p></body></html>'
    lake.store.put_bytes("landing/cs/a.warc.gz", warc_bytes([("http://a.cz/1", body, [])]))

    def contexts() -> list[tuple[str | None, str | None]]:
        [images] = lake.read_table("raw_crawl", "cs")["images"].to_list()  # one page
        return [(image["context_text"], image["context_source"]) for image in images]

    assert materialize(lake)["raw_crawl"]["warc_files_extracted"] == 1
    assert contexts() == [(None, None)]
    assert materialize(lake, raw_crawl_config={"nearby_context": True})["raw_crawl"]["warc_files_extracted"] == 1
    assert contexts() == [("Pražský hrad v zimě", "nearby")]
    # Each mode has its own cache entry: switching back reads the first one.
    again = materialize(lake, raw_crawl_config={"nearby_context": False})["raw_crawl"]
    assert (again["warc_files_extracted"], again["warc_files_cached"]) == (0, 1)
    assert contexts() == [(None, None)]


def test_a_registered_file_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch):
    from mella_assets.crawl import registration as crawl_module

    hashed: list[str] = []
    real = crawl_module._sha256_file
    monkeypatch.setattr(crawl_module, "_sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    lake = Lake(root=str(tmp_path / "lake"))
    store = lake.store
    store.put_bytes("landing/cs/a.warc.gz", warc_bytes([("http://a.cz/1", page("Pražský hrad v zimě"), [])]))
    outside = tmp_path / "elsewhere.warc.gz"
    outside.write_bytes(warc_bytes([("http://c.cz/1", page("Karlův most ráno"), [])]))
    store.put_bytes("sources/cs.txt", f"{outside}\n".encode())
    materialize(lake)
    materialize(lake)
    assert sorted(hashed) == ["a.warc.gz", "elsewhere.warc.gz"]  # the rerun hashed nothing

    changed = warc_bytes([("http://a.cz/2", page("Staroměstský orloj v noci"), [])])
    store.put_bytes("landing/cs/a.warc.gz", changed)
    metadata = materialize(lake)["raw_crawl"]
    assert sorted(hashed) == ["a.warc.gz", "a.warc.gz", "elsewhere.warc.gz"]
    sources = lake.read_table("crawl_sources", "cs")
    import hashlib

    assert hashlib.sha256(changed).hexdigest() in sources["sha256"].to_list()
    assert (metadata["warc_files_extracted"], metadata["warc_files_cached"]) == (1, 1)
    assert sorted(lake.read_table("raw_crawl", "cs")["page_url"]) == ["http://a.cz/2", "http://c.cz/1"]


def many_pages_warc(pages: int) -> bytes:
    """A WARC of ``pages`` small HTML pages, a gzip member each: slow to extract for its size."""
    members = []
    for n in range(pages):
        body = b"<html lang='cs'><body><img src='/%d.jpg' alt='Hrad %d'></body></html>" % (n, n)
        block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
        head = (
            f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://big.cz/{n}\r\nWARC-Date: 2024-05-01T10:00:00Z"
            f"\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n"
        )
        members.append(gzip.compress(head.encode() + block + b"\r\n\r\n", compresslevel=1))
    return b"".join(members)


def test_raw_crawl_at_its_deadline_writes_the_files_done_and_the_rerun_extracts_only_the_rest(tmp_path, monkeypatch):
    lake = Lake(root=str(tmp_path / "lake"))
    store = lake.store
    store.put_bytes("landing/cs/a.warc.gz", warc_bytes([("http://a.cz/1", page("Pražský hrad v zimě"), [])]))
    store.put_bytes("landing/cs/b.warc.gz", warc_bytes([("http://b.cz/1", page("Karlův most ráno"), [])]))
    # 40 000 pages: several seconds to extract even on an idle fast machine (8 000 once finished inside 1 s on an
    # idle box), far past a 1 s deadline.
    store.put_bytes("landing/cs/c-big.warc.gz", many_pages_warc(40_000))
    store.put_bytes("landing/cs/d.warc.gz", warc_bytes([("http://d.cz/1", page("Vltava"), [])]))
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_RAW_CRAWL", "1.0")

    first = materialize(lake)["raw_crawl"]  # succeeds: no StageTimeout
    partial = lake.read_table("raw_crawl", "cs")["page_url"].to_list()
    monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S_RAW_CRAWL")
    second = materialize(lake)["raw_crawl"]

    unfinished = [store.uri("landing/cs/c-big.warc.gz"), store.uri("landing/cs/d.warc.gz")]
    assert partial == ["http://a.cz/1", "http://b.cz/1"]  # the big file's pages so far are not kept: not cached
    assert (first["warc_files_extracted"], first["warc_files_unfinished"], first["stage_deadline"]) == (
        2,
        2,
        unfinished,
    )
    assert (second["warc_files_extracted"], second["warc_files_cached"], second["warc_files_unfinished"]) == (2, 2, 0)
    assert second["html_pages"] == 40_003


def test_crawl_sources_at_its_deadline_registers_what_is_done_and_the_rerun_downloads_only_the_rest(
    tmp_path, monkeypatch
):
    lake = Lake(root=str(tmp_path / "lake"))
    good = warc_bytes([("http://remote.cz/1", page("Kutná Hora"), [])])
    late = warc_bytes([("http://remote.cz/2", page("Telč"), [])])
    routes = {
        "/good.warc.gz": Route(good, content_type="application/warc"),
        # A source server that stays silent far past the stage deadline (only the deadline ends the download).
        "/stuck.warc.gz": Route(late, content_type="application/warc", delay_s=30.0),
        "/after.warc.gz": Route(late, content_type="application/warc"),
    }
    with ScriptedSite(routes) as site:
        urls = [f"{site.base_url}{path}" for path in routes]
        lake.store.put_bytes("sources/cs.txt", "\n".join(urls).encode())
        config = {"allowed_networks": ["127.0.0.1/32"]}
        monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_CRAWL_SOURCES", "1.5")
        started = time.monotonic()
        first = materialize(lake, config)["crawl_sources"]
        seconds = time.monotonic() - started
        registered = lake.read_table("crawl_sources", "cs")["uri"].to_list()
        rejects = lake.read_table("crawl_source_rejects", "cs").select("uri", "reason").rows()
        monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S_CRAWL_SOURCES")
        site.routes["/stuck.warc.gz"] = Route(late, content_type="application/warc")  # the server is well again
        before = len(site.paths())
        materialize(lake, config)
        rerun_paths = site.paths()[before:]

    assert seconds < 1.5 + 5.0  # the download ended at the stage deadline, not at its own 7 200 s cap
    assert registered == [urls[0]]
    # The stuck download and the one never started are retryable rejects, downloaded by the next run.
    assert rejects == [(urls[1], "stage_deadline"), (urls[2], "stage_deadline")]
    assert first["rows_rejected"] == 2
    assert rerun_paths == ["/stuck.warc.gz", "/after.warc.gz"]
    assert lake.read_table("crawl_sources", "cs")["uri"].to_list() == urls
    assert lake.read_table("crawl_source_rejects", "cs").height == 0
