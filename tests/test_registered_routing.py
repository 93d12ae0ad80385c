"""Registered WARC files (own crawls, ``sources/<code>.txt`` and ``sources/all.txt``): one download for every
language, one extraction split into per-shard slices, and pages routed to a language by their own declaration."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mella_assets.crawl.assets import crawl_sources, raw_crawl
from mella_assets.crawl.cc_index import page_shards
from mella_assets.crawl.html import extract_warc
from mella_assets.crawl.registration import (
    EXTRACTION_VERSION,
    extract_sources,
    extraction_cache_key,
    register_sources,
    route_by_declared_language,
    slices_prefix,
)
from mella_assets.crawl.sources import download_key, legacy_download_key
from mella_assets.crawl.warc import WarcStats
from mella_assets.definitions import materialize_language
from mella_assets.demo.corpus import warc_bytes
from mella_assets.know.pairs import CANDIDATE_INDEX, judge_candidates
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.resources.lake import Lake
from mella_assets.tables import CRAWL_SOURCES
from support.scripted_site import Route, ScriptedSite

ALLOW_LOOPBACK = {"ops": {"crawl_sources": {"config": {"allowed_networks": ["127.0.0.1/32"]}}}}


def html(alts: list[str], lang: str | None = None, og_locale: str | None = None, image: str = "p") -> str:
    lang_attr = f' lang="{lang}"' if lang else ""
    og = f'<meta property="og:locale" content="{og_locale}">' if og_locale else ""
    images = "".join(f'<img src="http://img.example.org/{image}{n}.jpg" alt="{alt}">' for n, alt in enumerate(alts))
    return f"<html{lang_attr}><head>{og}</head><body>{images}</body></html>"


def one_page_warc(url: str = "http://www.zpravy.cz/1") -> bytes:
    return warc_bytes([(url, html(["Pražský hrad a Karlův most pod čerstvým sněhem"], "cs"), [])])


def metadata(result) -> dict[str, list[dict]]:
    """Each asset's materialization metadata, one dict per run (a shard each for sharded assets)."""
    out: dict[str, list[dict]] = {}
    for event in result.get_asset_materialization_events():
        entry = {k: v.value for k, v in event.materialization.metadata.items()}
        out.setdefault(event.asset_key.path[-1], []).append(entry)
    return out


def register(lake: Lake, code: str, assets=(crawl_sources,), run_config=ALLOW_LOOPBACK) -> dict[str, list[dict]]:
    runs = materialize_language(code, list(assets), resources={"lake": lake}, run_config=run_config)
    found: dict[str, list[dict]] = {}
    for result in runs.results:
        assert result.success
        for name, entries in metadata(result).items():
            found.setdefault(name, []).extend(entries)
    return found


# -- one download for every language ---------------------------------------------------------------------------


def test_a_url_registered_by_two_languages_is_downloaded_once_and_stored_once(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    with ScriptedSite({"/part.warc.gz": Route(one_page_warc(), content_type="application/warc")}) as site:
        url = f"{site.base_url}/part.warc.gz"
        for code in ("cs", "ru"):
            lake.store.put_bytes(f"sources/{code}.txt", f"{url}\n".encode())
        register(lake, "cs")
        register(lake, "ru")
        gets = site.paths().count("/part.warc.gz")

    assert gets == 1
    assert list(lake.store.list("external/")) == [download_key(url)]
    rows = [lake.read_table("crawl_sources", code).select("uri", "key", "origin").rows() for code in ("cs", "ru")]
    assert rows == [[(url, download_key(url), "external")]] * 2


def test_a_download_stored_per_language_by_an_older_run_is_used_where_it_is(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    with ScriptedSite({}) as site:  # nothing to serve: a GET would be a 404 reject
        url = f"{site.base_url}/part.warc.gz"
        lake.store.put_bytes(legacy_download_key("cs", url), one_page_warc())  # as an older run stored it
        for code in ("cs", "ru"):
            lake.store.put_bytes(f"sources/{code}.txt", f"{url}\n".encode())
        register(lake, "cs")
        register(lake, "ru")
        requests = site.paths()

    assert requests == []
    assert list(lake.store.list("external/")) == [legacy_download_key("cs", url)]
    for code in ("cs", "ru"):  # the other language finds the copy too
        assert lake.read_table("crawl_sources", code)["key"].to_list() == [legacy_download_key("cs", url)]
        assert lake.read_table("crawl_source_rejects", code).height == 0


def test_sources_all_registers_its_entries_for_every_language_and_downloads_them_once(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    local = tmp_path / "own-crawl.warc.gz"
    local.write_bytes(one_page_warc("http://www.vlastni.cz/1"))
    with ScriptedSite({"/cc.warc.gz": Route(one_page_warc(), content_type="application/warc")}) as site:
        url = f"{site.base_url}/cc.warc.gz"
        lake.store.put_bytes("sources/all.txt", f"# every language\n{url}\n{local}\n".encode())
        lake.store.put_bytes("sources/cs.txt", f"{url}\n".encode())  # also in Czech's own list: registered once
        found = {code: register(lake, code)["crawl_sources"][0] for code in ("cs", "ru", "hu")}
        gets = site.paths().count("/cc.warc.gz")

    assert gets == 1
    for code in ("cs", "ru", "hu"):
        sources = lake.read_table("crawl_sources", code)
        assert sources.select("uri", "key", "origin").rows() == [
            (url, download_key(url), "external"),
            (local.resolve().as_uri(), None, "external"),
        ]
        assert found[code]["files_by_origin"] == {"external": 2}


# -- one extraction, cached in per-shard slices -----------------------------------------------------------------

SITES = ("www.zpravy.cz", "www.kucharka.cz", "cestovani.cz", "www.novosti.ru", "www.hirek.hu", "portal.example.com")


def sites_warc() -> bytes:
    """Two pages on each of six sites: four shards of four hold pages of several sites."""
    pages = []
    for n, site in enumerate(SITES):
        for page in (1, 2):
            alt = f"Pražský hrad a Karlův most pod sněhem číslo {n}{page}"
            pages.append((f"http://{site}/{page}", html([alt], "cs", image=f"s{n}-{page}-"), []))
    return warc_bytes(pages)


class ReadLog:
    """The keys a store is asked for: which slices a shard run reads (the store itself is real)."""

    def __init__(self, store: LakeStore, monkeypatch) -> None:
        self.keys: list[str] = []
        original = store.get_bytes

        def logged(key: str) -> bytes:
            self.keys.append(key)
            return original(key)

        monkeypatch.setattr(store, "get_bytes", logged)


def registered(store: LakeStore, name: str, data: bytes) -> pl.DataFrame:
    store.put_bytes(f"landing/cs/{name}", data)
    frame, _, _ = register_sources(LANGUAGES["cs"], store, CRAWL_SOURCES.empty(), lambda: None)
    return frame


def test_a_file_is_extracted_once_and_each_shard_reads_only_its_own_slice(tmp_path: Path, monkeypatch):
    store = LakeStore(tmp_path / "lake")
    sources = registered(store, "a.warc.gz", sites_warc())
    [sha] = sources["sha256"].to_list()
    whole_stats = WarcStats()
    whole = extract_warc(store.local_path("landing/cs/a.warc.gz"), whole_stats)
    expected = page_shards(whole["domain"], 4)
    assert expected.n_unique() >= 3  # the sites spread over shards

    first = extract_sources(sources, store, shard=0, shards=4)
    log = ReadLog(store, monkeypatch)
    later = [extract_sources(sources, store, shard=shard, shards=4) for shard in (1, 2, 3)]

    assert (first.extracted, first.cached) == (1, 0)
    assert [(done.extracted, done.cached) for done in later] == [(0, 1)] * 3
    prefix = slices_prefix(sha, 4)
    # Each later shard run read the index and its own slice (if it has pages), nothing else.
    assert log.keys == [
        key
        for shard in (1, 2, 3)
        for key in [f"{prefix}/index.json"] + ([f"{prefix}/{shard}.parquet"] if (expected == shard).any() else [])
    ]
    index = json.loads(store.get_bytes(f"{prefix}/index.json"))
    assert index["stats"] == whole_stats.as_dict()
    assert index["pages"] == {str(s): int((expected == s).sum()) for s in expected.unique().to_list()}
    for shard, done in enumerate([first, *later]):
        pages = done.pages()
        want = whole.filter(expected == shard).with_columns(pl.lit(sources["uri"][0]).alias("warc_uri"))
        if want.height:
            assert pages.equals(want)
        else:
            assert pages is None
        assert done.other_shard == whole.height - want.height
        assert done.stats == whole_stats  # the file's record counts, whole: raw_crawl's rows_in


def test_a_whole_file_cache_entry_from_an_older_run_is_split_instead_of_extracted(tmp_path: Path):
    store = LakeStore(tmp_path / "lake")
    sources = registered(store, "a.warc.gz", sites_warc())
    [sha] = sources["sha256"].to_list()
    stats = WarcStats()
    whole = extract_warc(store.local_path("landing/cs/a.warc.gz"), stats)
    store.put_bytes(extraction_cache_key(sha), _parquet(whole))  # what an older run cached
    store.put_bytes(extraction_cache_key(sha).removesuffix(".parquet") + ".json", json.dumps(stats.as_dict()).encode())
    store.delete("landing/cs/a.warc.gz")  # extracting again would fail: the split must come from the cache

    split = [extract_sources(sources, store, shard=shard, shards=4) for shard in range(4)]
    # Another shard count later: put together from the 4-shard slices in file order, split again.
    resplit = [extract_sources(sources, store, shard=shard, shards=3) for shard in range(3)]

    for runs, shards in ((split, 4), (resplit, 3)):
        assert sum(done.extracted for done in runs) == 0
        assert all(done.cached == 1 for done in runs)
        pages = pl.concat([done.pages() for done in runs if done.pages() is not None]).drop("warc_uri")
        assert pages.sort("record_offset").equals(whole.drop("warc_uri"))
        for shard, done in enumerate(runs):
            kept = done.pages()
            assert kept is None or set(page_shards(kept["domain"], shards)) == {shard}


def test_a_file_without_pages_is_split_for_a_new_shard_count_from_its_index_alone(tmp_path: Path):
    store = LakeStore(tmp_path / "lake")
    sources = registered(store, "empty.warc.gz", warc_bytes([]))
    first = extract_sources(sources, store, shard=0, shards=4)
    store.delete("landing/cs/empty.warc.gz")
    again = extract_sources(sources, store, shard=1, shards=3)
    assert (first.extracted, again.extracted, again.cached) == (1, 0, 1)
    assert first.pages() is None and again.pages() is None and again.other_shard == 0


def test_a_file_unfinished_at_the_deadline_leaves_no_slice_and_the_next_run_extracts_it(tmp_path: Path, monkeypatch):
    from mella_assets.crawl import registration

    store = LakeStore(tmp_path / "lake")
    store.put_bytes("landing/cs/a.warc.gz", one_page_warc("http://www.a.cz/1"))
    sources = registered(store, "b.warc.gz", sites_warc())
    monkeypatch.setattr(registration, "extract_warc", _timing_out_after(1))
    cut = extract_sources(sources, store, shard=0, shards=4)
    b_sha = sources.filter(pl.col("uri").str.ends_with("b.warc.gz"))["sha256"][0]
    left_by_cut = list(store.list(f"cache/raw_crawl/{EXTRACTION_VERSION}/{b_sha}/"))
    monkeypatch.undo()
    rerun = extract_sources(sources, store, shard=0, shards=4)

    assert left_by_cut == []  # nothing of the unfinished file is cached
    assert (cut.extracted, cut.unfinished) == (1, [store.uri("landing/cs/b.warc.gz")])
    assert (rerun.extracted, rerun.cached, rerun.unfinished) == (1, 1, [])
    assert cut.other_shard + (cut.pages().height if cut.pages() is not None else 0) == 1
    assert store.exists(f"{slices_prefix(b_sha, 4)}/index.json")


def _timing_out_after(calls: int):
    """extract_warc that reaches the stage deadline on the call after ``calls`` (the rest of the run is past it)."""
    from mella_assets.lib.watchdog import StageTimeout

    count = {"n": 0}

    def extract(path, stats=None, *, nearby_context=False):
        count["n"] += 1
        if count["n"] > calls:
            raise StageTimeout("raw_crawl", 1.5, 1.0, "MELLA_STAGE_TIMEOUT_S_RAW_CRAWL")
        return extract_warc(path, stats, nearby_context=nearby_context)

    return extract


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


# -- pages routed to a language by their own declaration ---------------------------------------------------------

CS = [
    "Pražský hrad a Karlův most pod čerstvým sněhem při ranním světle",
    "Gotická katedrála svatého Víta s vysokou věží na třetím nádvoří",
    "Barevné domky Zlaté uličky na Pražském hradě",
    "Svíčková na smetaně s houskovým knedlíkem, brusinkami a šlehačkou na talíři",
    "Hrad Karlštejn na skalním ostrohu nad lesy v podzimních barvách",
    "Řeka Berounka pod Karlštejnem s loďkami u břehu",
    "Sklenice plzeňského ležáku s hustou pěnou na dřevěném stole",
    "Nakrájený houskový knedlík na prkénku vedle hrnce s omáčkou",
    "Zlacená klenba kaple svatého Kříže na hradě Karlštejn",
]
RU = [
    "Собор Василия Блаженного с разноцветными куполами под снегом",
    "Каток у ГУМа на Красной площади вечером в огнях гирлянд",
    "Тарелка красного борща со сметаной и укропом на деревянном столе",
    "Нарезанный бородинский хлеб с кориандром на льняной салфетке",
    "Горящее соломенное чучело Масленицы на площади в Суздале",
    "Белокаменный Суздальский кремль с синими куполами в звёздах",
]
HU = [
    "A Halászbástya fehér tornyai és a Duna-parti Országház napsütésben",
    "A Mátyás-templom színes Zsolnay-cseréptetője a budai Várban",
    "Bográcsban rotyogó gulyásleves szabad tűz felett a kertben",
    "Faragott fa busómaszk szarvakkal és birkabundával Mohácson",
]
EN = "Prague castle and Charles bridge under fresh snow in the morning light"

# (page url, <html lang>, og:locale, alt texts): single-language sites, a Czech site with one page declaring Russian
# by og:locale alone and one whose declarations disagree, an English-declared page with a Czech alt, and a
# multilingual portal with a section per language and a silent page.
MIXED_PAGES = [
    ("http://www.zpravy.cz/1", "cs", None, CS[0:2]),
    ("http://www.zpravy.cz/2", "cs", "cs_CZ", CS[2:3]),
    ("http://www.zpravy.cz/3", None, None, CS[3:4]),
    ("http://www.zpravy.cz/4", None, "ru_RU", RU[0:1]),
    ("http://www.zpravy.cz/5", "cs", "ru_RU", [CS[4], RU[1]]),
    ("http://www.novosti.ru/1", "ru", None, RU[2:4]),
    ("http://www.novosti.ru/2", "ru-RU", None, RU[4:5]),
    ("http://www.hirek.hu/1", "hu", None, HU[0:2]),
    ("http://www.hirek.hu/2", "hu", None, HU[2:3]),
    ("http://news.example.com/1", "en", None, [EN, CS[5]]),
    ("http://portal.example.com/cs/1", "cs", None, CS[6:7]),
    ("http://portal.example.com/cs/2", "cs", None, CS[7:8]),
    ("http://portal.example.com/ru/1", "ru", None, RU[5:6]),
    ("http://portal.example.com/hu/1", "hu", None, HU[3:4]),
    ("http://portal.example.com/about", None, None, CS[8:9]),
]
ZPRAVY_RU, PORTAL_SILENT = "http://www.zpravy.cz/4", "http://portal.example.com/about"
NOVOSTI = {"http://www.novosti.ru/1", "http://www.novosti.ru/2"}
HIREK = {"http://www.hirek.hu/1", "http://www.hirek.hu/2"}
ZPRAVY_CS = {"http://www.zpravy.cz/1", "http://www.zpravy.cz/2"}
PORTAL = {code: f"http://portal.example.com/{code}/1" for code in ("cs", "ru", "hu")}
ROUTED = {  # the pages each language's raw_crawl leaves out: they declare another language
    "cs": {ZPRAVY_RU, *NOVOSTI, *HIREK, PORTAL["ru"], PORTAL["hu"]},
    "ru": {*ZPRAVY_CS, *HIREK, PORTAL["cs"], "http://portal.example.com/cs/2", PORTAL["hu"]},
    "hu": {ZPRAVY_RU, *ZPRAVY_CS, *NOVOSTI, PORTAL["cs"], "http://portal.example.com/cs/2", PORTAL["ru"]},
}


def mixed_warc() -> bytes:
    return warc_bytes(
        [(url, html(alts, lang, og, image=f"{n}-"), []) for n, (url, lang, og, alts) in enumerate(MIXED_PAGES)]
    )


class CountingIdentifier:
    """A real language identifier for one language, counting the texts it is asked about."""

    def __init__(self, code: str) -> None:
        self.identifier = LanguageIdentifier(targets=[LANGUAGES[code]])
        self.texts = 0
        check_many = self.identifier.check_many

        def counted(texts, *args, **kwargs):
            self.texts += len(texts)
            return check_many(texts, *args, **kwargs)

        self.identifier.check_many = counted


@pytest.fixture(scope="module")
def mixed_pages(tmp_path_factory) -> pl.DataFrame:
    store = LakeStore(tmp_path_factory.mktemp("mixed") / "lake")
    return extract_sources(registered(store, "mixed.warc.gz", mixed_warc()), store).pages()


def test_routing_leaves_out_exactly_the_pages_the_alt_text_gate_calls_another_languages(mixed_pages):
    for code, routed in ROUTED.items():
        kept, left_out = route_by_declared_language(mixed_pages, LANGUAGES[code])
        assert set(mixed_pages["page_url"]) - set(kept["page_url"]) == routed
        assert left_out == len(routed)
        # English-declared and disagreeing pages stay for every language: their text decides.
        assert {"http://news.example.com/1", "http://www.zpravy.cz/5"} <= set(kept["page_url"])


@pytest.mark.parametrize("code", ["cs", "ru", "hu"])
def test_routing_keeps_the_same_alt_text_pairs_and_drops_only_other_language_rejects(mixed_pages, code):
    language = LANGUAGES[code]
    routed_pages, _ = route_by_declared_language(mixed_pages, language)
    plain_lid, routed_lid = CountingIdentifier(code), CountingIdentifier(code)
    plain = judge_candidates(mixed_pages.with_columns(pl.lit(code).alias("language")), language, plain_lid.identifier)
    routed = judge_candidates(
        routed_pages.with_columns(pl.lit(code).alias("language")), language, routed_lid.identifier
    )

    assert routed.kept.height > 0
    assert routed.kept.drop(CANDIDATE_INDEX).equals(plain.kept.drop(CANDIDATE_INDEX))
    # The rejects lose the rows of the routed pages (all page_language_mismatch here) and nothing else changes.
    on_routed = pl.col("page_url").is_in(list(ROUTED[code]))
    assert plain.rejects.filter(on_routed)["reason"].unique().to_list() == ["page_language_mismatch"]
    assert routed.rejects.filter(on_routed).height == 0
    kept_rejects = plain.rejects.filter(~on_routed).drop(CANDIDATE_INDEX)
    assert routed.rejects.drop(CANDIDATE_INDEX, "page_language").equals(kept_rejects.drop("page_language"))
    # One prior moves: the portal's silent page took its site's majority declaration (Czech); routed, only pages
    # that may be this language's are its site (its Czech alt is a wrong_language reject either way).
    moved = routed.rejects.join(kept_rejects, on=["page_url", "image_url"], suffix="_plain").filter(
        pl.col("page_language") != pl.col("page_language_plain")
    )
    expected = [] if code == "cs" else [(PORTAL_SILENT, code, "cs", "wrong_language")]
    assert moved.select("page_url", "page_language", "page_language_plain", "reason").rows() == expected
    # The gate had kept those rows from language ID already: routing saves the cheap checks, not detector calls.
    assert routed_lid.texts == plain_lid.texts


def test_on_a_multilingual_site_the_furniture_share_counts_only_the_languages_own_pages(tmp_path: Path):
    """A measured difference, not an equality: the furniture filter's share (same image and alt on at least half of
    the host's pages) is taken over the pages the language sees. A Czech section's banner on its 4 pages of a host
    with 6 more Russian pages is 4 of 10 pages without routing (kept once, then duplicate_pair) and 4 of 4 with it
    (alt_site_repeated: furniture of the Czech section)."""
    banner = "Mapa Evropy s vyznačenými hlavními městy všech států"
    banner_img = f'<img src="http://img.example.org/banner.jpg" alt="{banner}">'
    pages = [
        (
            f"http://portal.example.com/cs/{n}",
            html([CS[n]], "cs", image=f"cs{n}-").replace("<body>", f"<body>{banner_img}"),
            [],
        )
        for n in range(4)
    ] + [(f"http://portal.example.com/ru/{n}", html([RU[n]], "ru", image=f"ru{n}-"), []) for n in range(6)]
    store = LakeStore(tmp_path / "lake")
    frame = extract_sources(registered(store, "portal.warc.gz", warc_bytes(pages)), store).pages()
    frame = frame.with_columns(pl.lit("cs").alias("language"))
    czech = LANGUAGES["cs"]
    routed_frame, left_out = route_by_declared_language(frame, czech)
    identifier = LanguageIdentifier(targets=[czech])
    plain, routed = (judge_candidates(f, czech, identifier) for f in (frame, routed_frame))

    def banner_reasons(judged) -> list[str | None]:
        rows = pl.concat([judged.kept, judged.rejects], how="diagonal_relaxed").filter(pl.col("alt_text") == banner)
        return rows.sort("page_url")["reason"].to_list()

    assert left_out == 6
    assert banner_reasons(plain) == [None, "duplicate_pair", "duplicate_pair", "duplicate_pair"]
    assert banner_reasons(routed) == ["alt_site_repeated"] * 4
    assert plain.kept.height - routed.kept.height == 1  # the banner pair; the four captions are kept either way


def test_raw_crawl_shards_route_a_file_shared_by_languages_from_one_extraction(tmp_path: Path):
    lake = Lake(root=str(tmp_path / "lake"))
    warc = tmp_path / "mixed.warc.gz"
    warc.write_bytes(mixed_warc())
    lake.store.put_bytes("sources/all.txt", f"{warc}\n".encode())
    total = len(MIXED_PAGES)
    runs = {code: register(lake, code, (crawl_sources, raw_crawl))["raw_crawl"] for code in ("cs", "ru")}
    off = {"ops": {"raw_crawl": {"config": {"route_by_declared_language": False}}}}
    unrouted = register(lake, "hu", (crawl_sources, raw_crawl), run_config=off)["raw_crawl"]

    for code, shards in runs.items():
        pages = lake.read_table("raw_crawl", code)["page_url"].to_list()
        assert sorted(pages) == sorted({url for url, *_ in MIXED_PAGES} - ROUTED[code])
        assert sum(shard["rejected_by_reason"].get("declares_other_language", 0) for shard in shards) == len(
            ROUTED[code]
        )
        for shard in shards:  # every page of the file is this shard's (kept or routed) or another shard's
            reasons = shard["rejected_by_reason"]
            assert (
                shard["html_pages"] + reasons.get("declares_other_language", 0) + reasons.get("other_shard", 0) == total
            )
            assert shard["rows_in"] == shard["rows_out"] + shard["rows_rejected"]
    # The file was extracted once, by the first shard run of the first language; every other run read slices.
    extracted = [shard["warc_files_extracted"] for code in ("cs", "ru") for shard in runs[code]] + [
        shard["warc_files_extracted"] for shard in unrouted
    ]
    assert extracted == [1] + [0] * (len(extracted) - 1)
    assert len(lake.read_table("raw_crawl", "hu")) == total  # routing off: every page, as before
    assert all("declares_other_language" not in shard["rejected_by_reason"] for shard in unrouted)
