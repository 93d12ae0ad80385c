"""The yield funnel (issue #18, item 7): per language and crawl, pages → candidates → kept alt texts → images →
pairs → SFT records with each step's ratio, as the `yield_by_language` view, in `mella_dataset`'s metadata and in
the dataset card; a Common Crawl page selection (`cc_selection`) adds the first step."""

import io
import shutil

import polars as pl
import pytest

from mella_assets.demo.cc_crawl import DEMO_CRAWL
from mella_assets.lib.catalog import YIELD_SCHEMA, records_per_page, run_sql, yield_funnel
from mella_assets.lib.lake import LakeStore

STAGES = [
    "selected_pages",
    "pages",
    "candidates",
    "kept_alt_texts",
    "images",
    "d_know_pairs",
    "d_ling_pairs",
    "sft_records",
]
CC_42 = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-42/segments/1727944253/warc/"
CC_38 = "s3://commoncrawl/crawl-data/CC-MAIN-2024-38/segments/1725700651420/warc/"


def put_selection(store: LakeStore, crawl: str, frame: pl.DataFrame) -> None:
    """A `cc_selection` file where a selection by crawl, language and shard would put it."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    store.put_bytes(f"tables/cc_selection/crawl={crawl}/language=cs/shard=0/data.parquet", buffer.getvalue())


def selection(crawl: str, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "url": [f"https://{crawl.lower()}.cz/{i}" for i in range(n)],
            "warc_filename": [f"crawl-data/{crawl}/segments/1/warc/{crawl}-x-{i:05d}.warc.gz" for i in range(n)],
            "warc_record_offset": list(range(n)),
            "warc_record_length": [1000] * n,
            "language": ["cs"] * n,
            "shard": pl.Series([0] * n, dtype=pl.Int32),
            "crawl": [crawl] * n,
        }
    )


def candidates(n: int) -> list[dict]:
    return [{"image_url": f"https://img.cz/{i}.jpg", "alt_raw": "x"} for i in range(n)]


@pytest.fixture
def traced_lake(tmp_path) -> LakeStore:
    """Czech pages from two Common Crawl crawls and an own crawl, with one image found in both crawls and one
    fetched image no alt text points to."""
    store = LakeStore(tmp_path)
    put_selection(store, "CC-MAIN-2024-42", selection("CC-MAIN-2024-42", 3))
    put_selection(store, "CC-MAIN-2024-38", selection("CC-MAIN-2024-38", 2))
    pages = {
        "p1": CC_42 + "CC-MAIN-20241003093832-20241003123832-00000.warc.gz",
        "p2": CC_42 + "CC-MAIN-20241003093832-20241003123832-00001.warc.gz",
        "p3": CC_38 + "CC-MAIN-20240912-00007.warc.gz",
        "p4": "file:///lake/landing/cs/crawl-20261201.warc.gz",
        # A Common Crawl file registered on its own: its name holds a capture time, not the crawl.
        "p5": "https://mirror.example/CC-MAIN-20241003093832-20241003123832-00002.warc.gz",
    }
    store.write_table(
        "raw_crawl",
        "cs",
        pl.DataFrame(
            {
                "warc_uri": list(pages.values()),
                "page_url": [f"https://x.cz/{page}" for page in pages],
                "images": [candidates(n) for n in (3, 2, 1, 2, 1)],
                "language": ["cs"] * 5,
            }
        ),
    )
    alt_texts = [("p1", "u1"), ("p2", "u2"), ("p3", "u2"), ("p4", "u3"), ("p5", "u4")]
    store.write_table(
        "alt_text_pairs",
        "cs",
        pl.DataFrame(
            {
                "warc_uri": [pages[page] for page, _ in alt_texts],
                "page_url": [f"https://x.cz/{page}" for page, _ in alt_texts],
                "image_url": [url for _, url in alt_texts],
                "alt_text": ["Pražský hrad v zimě"] * 5,
                "language": ["cs"] * 5,
            }
        ),
    )
    # u2 is on pages of both crawls; u5 has no alt text in the lake (e.g. carried over from an older run).
    store.write_table(
        "images",
        "cs",
        pl.DataFrame(
            {"image_url": ["u1", "u2", "u3", "u5"], "image_sha256": ["s1", "s2", "s3", "s5"], "language": ["cs"] * 4}
        ),
    )
    store.write_table("d_know", "cs", pl.DataFrame({"image_sha256": ["s1", "s2", "s3"], "language": ["cs"] * 3}))
    store.write_table("d_ling", "cs", pl.DataFrame({"image_sha256": ["s1", "s5"], "language": ["cs"] * 2}))
    store.write_table(
        "mella_dataset",
        "cs",
        pl.DataFrame(
            {
                "image_sha256": ["s1", "s1", "s2", "s3", "s5"],
                "source": ["know", "ling", "know", "know", "ling"],
                "language": ["cs"] * 5,
            }
        ),
    )
    return store


def test_rows_are_traced_to_their_crawl_and_untraceable_rows_count_only_under_all(traced_lake):
    frame = run_sql(traced_lake, "SELECT * FROM yield_by_language")
    assert frame.schema == YIELD_SCHEMA
    rows = {
        crawl: group.sort("step")["rows"].to_list() for (crawl,), group in frame.group_by("crawl", maintain_order=True)
    }
    # steps:                  selected pages candidates kept images d_know d_ling sft
    assert rows == {
        "CC-MAIN-2024-38": [2, 1, 1, 1, 0, 0, 0, 0],  # its one image is also on a page of CC-MAIN-2024-42
        "CC-MAIN-2024-42": [3, 2, 5, 2, 1, 1, 1, 2],
        "own": [0, 2, 3, 2, 1, 1, 0, 1],
        "all": [5, 5, 9, 5, 4, 3, 2, 5],
    }
    assert list(rows) == ["CC-MAIN-2024-38", "CC-MAIN-2024-42", "own", "all"]  # the view's order
    assert frame.filter(pl.col("crawl") == "all")["stage"].to_list() == STAGES


def test_ratios_are_to_the_previous_step_and_to_the_first_step_with_rows(traced_lake):
    frame = run_sql(traced_lake, "SELECT * FROM yield_by_language").sort("crawl", "step")
    everything = frame.filter(pl.col("crawl") == "all")
    assert everything["ratio_to_previous"].to_list() == [None, 1.0, 9 / 5, 5 / 9, 4 / 5, 3 / 4, 2 / 3, 5 / 2]
    assert everything["ratio_to_first"].to_list() == [1.0, 1.0, 9 / 5, 1.0, 4 / 5, 3 / 5, 2 / 5, 1.0]
    # An own crawl selects nothing from the index: its pages are its base, and no ratio divides by zero.
    own = frame.filter(pl.col("crawl") == "own")
    assert own["ratio_to_previous"].to_list()[:3] == [None, None, 3 / 2]
    assert own["ratio_to_first"].to_list()[:3] == [None, 1.0, 3 / 2]
    assert own["ratio_to_previous"].to_list()[-2:] == [0.0, None]  # d_ling 0 after d_know 1; sft 1 after d_ling 0


def test_without_a_selection_the_funnel_starts_at_the_pages(traced_lake):
    shutil.rmtree(traced_lake.path("tables/cc_selection"))
    frame = yield_funnel(traced_lake, "cs")
    assert frame.filter(pl.col("crawl") == "all")["stage"].to_list() == STAGES[1:]
    assert set(frame["crawl"]) == {"CC-MAIN-2024-38", "CC-MAIN-2024-42", "own", "all"}


def test_a_lake_without_pages_has_no_yield_view_and_an_empty_funnel(tmp_path):
    store = LakeStore(tmp_path)
    store.write_table("d_know", "cs", pl.DataFrame({"image_sha256": ["s1"], "language": ["cs"]}))
    names = set(run_sql(store, "SELECT table_name FROM information_schema.tables")["table_name"])
    assert "yield_by_language" not in names
    frame = yield_funnel(store)
    assert frame.height == 0 and frame.schema == YIELD_SCHEMA
    assert records_per_page(frame) is None


# -- the demo: every language's real tables --------------------------------------------------------------------


def independent_counts(store: LakeStore, code: str) -> list[int]:
    """selected pages, pages, candidates, kept alt texts, images, d_know, d_ling, records of a language, counted
    with polars."""
    selections = sorted(store.path("tables/cc_selection").glob(f"crawl=*/language={code}/shard=*/data.parquet"))
    selected = sum(pl.read_parquet(path).height for path in selections)
    raw = store.read_table("raw_crawl", code)
    heights = [store.read_table(t, code).height for t in ("alt_text_pairs", "images", "d_know", "d_ling")]
    return [
        selected,
        raw.height,
        int(raw["images"].list.len().sum()),
        *heights,
        store.read_table("mella_dataset", code).height,
    ]


def pages_by_crawl(store: LakeStore, code: str) -> dict[str, tuple[int, int]]:
    """(pages, candidates) of a language per crawl: the demo crawl's pages were read by range, the rest landed."""
    raw = store.read_table("raw_crawl", code)
    by_range = raw["warc_uri"].str.contains(DEMO_CRAWL)
    return {
        crawl: (part.height, int(part["images"].list.len().sum()))
        for crawl, part in ((DEMO_CRAWL, raw.filter(by_range)), ("own", raw.filter(~by_range)))
    }


def test_on_the_demo_the_view_equals_counts_taken_from_the_tables(demo):
    store = demo["lake"]
    frame = run_sql(store, "SELECT * FROM yield_by_language")
    for code in demo["codes"]:
        expected = independent_counts(store, code)
        rows = frame.filter(pl.col("language") == code, pl.col("crawl") == "all").sort("step")
        assert rows["stage"].to_list() == STAGES
        assert rows["rows"].to_list() == expected, code
        previous = [None, *expected[:-1]]
        assert rows["ratio_to_previous"].to_list() == [
            None if p is None else n / p for n, p in zip(expected, previous, strict=True)
        ]
        # The demo crawl's pages came by range from the index; the language's other WARC landed (its own crawl).
        for crawl, (pages, candidates) in pages_by_crawl(store, code).items():
            rows = frame.filter(pl.col("language") == code, pl.col("crawl") == crawl).sort("step")
            assert rows.filter(pl.col("stage") == "pages")["rows"].to_list() == [pages], (code, crawl)
            assert rows.filter(pl.col("stage") == "candidates")["rows"].to_list() == [candidates], (code, crawl)
        selected = frame.filter(pl.col("language") == code, pl.col("stage") == "selected_pages")
        assert dict(selected.select("crawl", "rows").iter_rows()) == {
            DEMO_CRAWL: expected[0],
            "own": 0,
            "all": expected[0],
        }
    assert set(frame["language"]) == set(demo["codes"])
    assert set(frame["crawl"]) == {DEMO_CRAWL, "own", "all"}


def test_on_the_demo_mella_dataset_metadata_and_the_dataset_card_show_the_yield(demo):
    import dagster as dg

    store = demo["lake"]
    latest = {}
    for record in demo["instance"].fetch_materializations(dg.AssetKey("mella_dataset"), limit=1000).records:
        event = record.asset_materialization
        latest.setdefault(event.partition, event.metadata)
    card = store.get_bytes(f"exports/{store.get_bytes('exports/LATEST').decode()}/README.md").decode()
    yield_section = card.split("## Yield", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in yield_section.splitlines() if line.startswith("| stage"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns == ["stage", *sorted(demo["codes"])]
    for code in demo["codes"]:
        expected = independent_counts(store, code)
        metadata = latest[code]
        shown = [dict(record.data) for record in metadata["yield"].value.records]
        assert [(r["stage"], r["rows"]) for r in shown if r["crawl"] == "all"] == list(
            zip(STAGES, expected, strict=True)
        )
        assert {r["crawl"] for r in shown} == {DEMO_CRAWL, "own", "all"}
        assert metadata["records_per_page"].value == pytest.approx(expected[-1] / expected[1])
        # The card: one column per language, "rows (×ratio to the previous step)".
        cells = {
            line.strip("|").split("|")[0].strip(): line.strip("|").split("|")[1 + columns[1:].index(code)].strip()
            for line in yield_section.splitlines()
            if line.startswith("| ") and not line.startswith("| stage")
        }
        assert cells["selected_pages"] == str(expected[0])
        assert cells["pages"] == f"{expected[1]} (×{round(expected[1] / expected[0], 3)})"
        assert cells["sft_records"] == f"{expected[-1]} (×{round(expected[-1] / expected[-2], 3)})"


def test_a_selection_beside_the_demo_tables_adds_selected_pages_as_the_first_step(demo, tmp_path):
    store = LakeStore(tmp_path)
    # Every demo table but its own selection, which the hand-written one replaces.
    shutil.copytree(demo["lake"].path("tables"), tmp_path / "tables", ignore=shutil.ignore_patterns("cc_selection"))
    code = demo["codes"][0]
    pages = store.read_table("raw_crawl", code).height
    # The demo's pages as if selected from an index, plus three more whose records could not be read.
    selected = selection("own", pages + 3).with_columns(language=pl.lit(code))
    selected = selected.with_columns(warc_filename=pl.format("landing/{}/demo-{}.warc.gz", "language", "url"))
    buffer = io.BytesIO()
    selected.write_parquet(buffer)
    store.put_bytes(f"tables/cc_selection/crawl=demo/language={code}/shard=0/data.parquet", buffer.getvalue())
    rows = yield_funnel(store, code).filter(pl.col("crawl") == "all").sort("step")
    assert rows["stage"].to_list() == STAGES
    assert rows["rows"].to_list()[:2] == [pages + 3, pages]
    assert rows["ratio_to_previous"][1] == pages / (pages + 3)
    assert rows["ratio_to_first"][-1] == rows["rows"][-1] / (pages + 3)
    other = demo["codes"][1]
    others = yield_funnel(store, other).filter(pl.col("stage") == "selected_pages")["rows"].to_list()
    assert others and set(others) == {0}


def test_the_estimate_scales_the_lakes_ratios_to_the_records_wanted(traced_lake):
    from benchmarks.yield_estimate import CC_PAGES, FIGURES, assume_records_per_page, estimate, lake_ratios, targets

    ratios = lake_ratios(yield_funnel(traced_lake))
    # every crawl: 5 selected, 5 pages, 9 candidates, 5 kept alt texts, 4 images, 5 records
    assert ratios.row(0, named=True) == {
        "language": "cs",
        "pages": 5,
        "selected_per_page": 1.0,
        "candidates_per_page": 9 / 5,
        "kept_per_page": 1.0,
        "images_per_page": 4 / 5,
        "d_know_per_page": 3 / 5,
        "d_ling_per_page": 2 / 5,
        "records_per_page": 1.0,
    }
    assert targets(["cs", "ru"], 1000, "even") == {"cs": 500, "ru": 500}
    assert targets(["cs", "ru"], 1000, "pages")["cs"] == 1000 * CC_PAGES["ces"] / (CC_PAGES["ces"] + CC_PAGES["rus"])
    plan = estimate(ratios, {"cs": 36_000}, list(FIGURES)).row(0, named=True)
    assert plan["pages_needed"] == 36_000 and plan["crawls_needed"] == 36_000 / CC_PAGES["ces"]
    rate = {f.stage: f.per_second for f in FIGURES}
    assert plan["range reads + extraction (core-h)"] == 36_000 / rate["range reads + extraction"] / 3600
    assert plan["alt-text filters (core-h)"] == 36_000 * 9 / 5 / rate["alt-text filters"] / 3600
    assert plan["captions (gpu-h)"] == 36_000 * 4 / 5 / rate["captions"] / 3600
    # Another yield: the steps after the candidates scale with it, the candidates per page stay the lake's.
    assumed = assume_records_per_page(ratios, 0.25).row(0, named=True)
    assert (assumed["records_per_page"], assumed["kept_per_page"], assumed["images_per_page"]) == (0.25, 0.25, 0.2)
    assert assumed["candidates_per_page"] == 9 / 5
    assert estimate(assume_records_per_page(ratios, 0.25), {"cs": 36_000}, list(FIGURES))["pages_needed"][0] == 144_000


def test_the_card_shows_one_column_per_language_with_every_crawl_together(traced_lake):
    from mella_assets.dataset.export import _yield_section

    lines = _yield_section(yield_funnel(traced_lake))
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| stage | cs |"
    assert table[1] == "| selected_pages | 5 |"
    assert table[2] == "| pages | 5 (×1.0) |"
