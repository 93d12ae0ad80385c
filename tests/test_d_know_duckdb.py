"""D_know built by DuckDB over the shard files (know/d_know_build.py) gives exactly the table the in-memory recipe it
replaced gave (kept as the reference in tests/support/d_know_reference.py): same rows, same order, same values, same
dropped counts — on generated shards with repeats across shards, a stale shard file and headline excess, on the demo
lake, and on S3."""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from mella_assets.know.alt_kind import HEADLINE_OVER_MIX, KINDS, kind_shares
from mella_assets.know.d_know_build import build_d_know
from mella_assets.languages import LANGUAGES, Language
from mella_assets.lib.lake import TMP_PREFIX, LakeStore, TableNotFoundError
from mella_assets.tables import D_KNOW
from support.d_know_reference import reference_d_know

CS = LANGUAGES["cs"]
SHARDS = ["00", "01", "02", "03"]
TEXT = (
    "Pražský hrad v zimě za soumraku nad Vltavou stojí katedrála svatého Víta most Karlův starý orloj na náměstí "
    "lidé procházejí ulicí večerní světla trh s vánočními stromky zámek Hluboká jezero v Krkonoších vlak do Brna"
)
WORDS = TEXT.split()


def _sha(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def write_generated_language(store: LakeStore, seed: int = 7, pages: int = 160) -> None:
    """A language's shards as the shard runs write them, with what the merge must settle: pages of one URL in two
    shards, image URLs on pages of several shards (each shard lists them, with its own key: which one is kept shows),
    two URLs of one image, (image, alt) pairs repeated within and across shards, images not stored, headlines in
    excess, and a stale shard file of another shard count that must not be read."""
    rng = random.Random(seed)
    page_urls = [f"https://www.web{rng.randrange(12)}.cz/clanek/{n}" for n in range(pages - 10)]
    page_urls += rng.sample(page_urls, 10)  # ten page URLs read twice, likely in two shards
    alts = [" ".join(rng.sample(WORDS, rng.randint(3, 7))) for _ in range(45)]
    by_shard: dict[str, list[dict]] = {shard: [] for shard in SHARDS}
    for page_url in page_urls:
        shard = rng.choice(SHARDS)
        for _ in range(rng.randint(1, 5)):
            by_shard[shard].append(
                {
                    "page_url": page_url,
                    "domain": page_url.split("/")[2],
                    "image_url": f"https://img.example.cz/{rng.randrange(140)}.jpg",
                    "alt_text": rng.choice(alts),
                    "alt_kind": rng.choices(KINDS, weights=(2, 5, 3))[0],
                    "warc_uri": f"s3://crawl/{shard}.warc.gz",
                    "language": "cs",
                }
            )
    for n in range(3):  # pairs without a page URL sort first
        by_shard["01"].append({**by_shard["01"][n], "page_url": None, "domain": None})
    for shard, rows in by_shard.items():
        store.write_table("alt_text_pairs", "cs", pl.DataFrame(rows), shard)
        urls = sorted({row["image_url"] for row in rows})
        rng.shuffle(urls)
        stored = [url for url in urls if not url.endswith(("3.jpg", "7.jpg"))]  # 404s: no image row
        number = [int(url.rsplit("/", 1)[1].split(".")[0]) for url in stored]
        store.write_table(
            "images",
            "cs",
            pl.DataFrame(
                {
                    "language": "cs",
                    "image_url": stored,
                    "image_sha256": [_sha(n // 2) for n in number],  # URLs 2k and 2k+1 hold one image
                    "phash": [f"{rng.getrandbits(64):016x}" for _ in stored],
                    "image_key": [f"images/{_sha(n // 2)}.{shard}.jpg" for n in number],
                    "width": [640] * len(stored),
                }
            ),
            shard,
        )
    stale = pl.DataFrame({"page_url": ["https://stale.cz/"], "domain": ["stale.cz"], "alt_kind": ["caption"]})
    stale = stale.with_columns(image_url=pl.lit("https://img.example.cz/0.jpg"), alt_text=pl.lit("Starý soubor"))
    store.write_table("alt_text_pairs", "cs", stale, "05")


def writer(store: LakeStore, language: Language):
    """What the asset hands build_d_know: the lake's streaming table write (``Lake.write_batches``)."""
    return lambda batches: store.write_table_batches(
        "d_know", language.code, itertools.chain([D_KNOW.empty()], batches)
    )


def check_same_as_reference(store: LakeStore, language: Language, shards: list[str], share: float, **kwargs) -> None:
    pairs = store.read_shards("alt_text_pairs", language.code, shards)
    images = store.read_shards("images", language.code, shards)
    expected, dropped = reference_d_know(pairs, images, language, share)
    built = build_d_know(store, language, shards, share, writer(store, language), **kwargs)
    assert_frame_equal(store.read_table("d_know", language.code), expected)
    assert (built.rows_in, built.rows) == (pairs.height, expected.height)
    assert {
        "no_stored_image": built.no_stored_image,
        "duplicate_pair": built.duplicate_pair,
        HEADLINE_OVER_MIX: built.headline_over_mix,
    } == dropped
    assert built.kind_shares() == kind_shares(expected)
    assert_frame_equal(built.preview, expected.head(5))


@pytest.mark.parametrize("share", [1.0, 0.2, 0.0])
def test_generated_shards_give_the_reference_table_in_several_batches(tmp_path: Path, share: float) -> None:
    store = LakeStore(tmp_path / "lake")
    write_generated_language(store)
    # Small batches and page-URL ranges of ~40 rows: the order is put together from many sorted ranges.
    check_same_as_reference(store, CS, SHARDS, share, batch_rows=17, sort_range_rows=40)
    table = store.read_table("d_know", "cs")
    assert "Starý soubor" not in table["alt_text"].to_list()  # the stale shard=05 file is not read
    assert table.height > 100 and table["image_key"].str.contains(r"\.0[1-3]\.jpg").any()
    files = sorted(p.name for p in (tmp_path / "lake" / "tables" / "d_know" / "language=cs").iterdir())
    assert files == ["data.parquet"]  # no temporary file left


def test_the_generated_language_has_every_case_the_merge_settles(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / "lake")
    write_generated_language(store)
    pairs = store.read_shards("alt_text_pairs", "cs", SHARDS).with_row_index("row")
    images = store.read_shards("images", "cs", SHARDS)
    _, dropped = reference_d_know(pairs.drop("row"), images, CS, 0.2)
    assert min(dropped.values()) > 0
    # An image URL listed by two shards, a page URL in two shards, one image under two URLs.
    assert images["image_url"].is_duplicated().any()
    page_shards = pairs.with_columns(shard=pl.col("warc_uri")).group_by("page_url").agg(pl.col("shard").n_unique())
    assert page_shards["shard"].max() >= 2
    assert images.unique("image_url").group_by("image_sha256").len()["len"].max() >= 2


def test_the_order_of_pages_read_in_two_shards_follows_the_shard_order(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / "lake")
    page = "https://www.example.cz/a"
    for shard, alt in (("00", "Karlův most v mlze"), ("01", "Karlův most v mlze"), ("02", "Orloj na náměstí")):
        store.write_table(
            "alt_text_pairs",
            "cs",
            pl.DataFrame(
                {
                    "page_url": [page],
                    "domain": "www.example.cz",
                    "image_url": "u",
                    "alt_text": alt,
                    "alt_kind": "caption",
                }
            ),
            shard,
        )
        store.write_table(
            "images",
            "cs",
            pl.DataFrame({"language": "cs", "image_url": ["u"], "image_sha256": "s", "phash": "0", "image_key": shard}),
            shard,
        )
    build = build_d_know(store, CS, ["00", "01", "02"], 1.0, writer(store, CS))
    table = store.read_table("d_know", "cs")
    assert table.select("alt_text", "image_key").rows() == [("Karlův most v mlze", "00"), ("Orloj na náměstí", "00")]
    assert (build.duplicate_pair, build.no_stored_image) == (1, 0)


def test_a_lake_written_before_sharding_reads_its_single_file_and_none_fails_naming_the_asset(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / "lake")
    with pytest.raises(TableNotFoundError, match="alt_text_pairs"):
        build_d_know(store, CS, SHARDS, 1.0, writer(store, CS))
    write_generated_language(store)
    for table in ("alt_text_pairs", "images"):
        whole = store.read_shards(table, "cs", SHARDS)
        shutil.rmtree(tmp_path / "lake" / "tables" / table)
        store.write_table(table, "cs", whole)
    check_same_as_reference(store, CS, SHARDS, 0.2)


def test_a_failed_write_keeps_the_previous_table_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    import mella_assets.know.d_know_build as d_know_build

    store = LakeStore(tmp_path / "lake")
    write_generated_language(store)
    build_d_know(store, CS, SHARDS, 1.0, writer(store, CS))
    before = store.read_table("d_know", "cs")
    calls = []

    def failing_second_batch(batch: pl.DataFrame, language: Language) -> pl.DataFrame:
        calls.append(batch.height)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(batch, language)

    original = d_know_build._with_keywords
    monkeypatch.setattr(d_know_build, "_with_keywords", failing_second_batch)
    with pytest.raises(OSError, match="disk full"):
        build_d_know(store, CS, SHARDS, 0.2, writer(store, CS), batch_rows=20)
    assert_frame_equal(store.read_table("d_know", "cs"), before)
    folder = tmp_path / "lake" / "tables" / "d_know" / "language=cs"
    assert not [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_the_s3_lake_is_read_by_duckdb_and_written_in_one_put(s3, tmp_path: Path) -> None:
    store = LakeStore("s3://mella/d-know", cache_dir=tmp_path / "cache")
    write_generated_language(store, seed=11, pages=60)
    check_same_as_reference(store, CS, SHARDS, 0.2)


def test_every_demo_language_gives_the_reference_table(demo, tmp_path: Path) -> None:
    from mella_assets.resources.lake import current_shards

    for code in demo["codes"]:
        root = tmp_path / code
        for table in ("alt_text_pairs", "images"):
            shutil.copytree(demo["lake"].local_root / "tables" / table, root / "tables" / table)
        store = LakeStore(root)
        check_same_as_reference(store, LANGUAGES[code], current_shards(), 1.0)
        # The demo's own d_know (written by the asset) is the same table.
        assert_frame_equal(store.read_table("d_know", code), demo["lake"].read_table("d_know", code))


def test_a_language_without_pairs_writes_an_empty_table_with_the_declared_columns(tmp_path: Path) -> None:
    from mella_assets.tables import ALT_TEXT_PAIRS, IMAGES

    store = LakeStore(tmp_path / "lake")
    store.write_table("alt_text_pairs", "cs", ALT_TEXT_PAIRS.empty(), "00")
    store.write_table("images", "cs", IMAGES.empty(), "00")
    built = build_d_know(store, CS, SHARDS, 0.2, writer(store, CS))
    assert_frame_equal(store.read_table("d_know", "cs"), D_KNOW.empty())
    assert (built.rows_in, built.rows, built.kind_shares()) == (0, 0, dict.fromkeys(KINDS, 0.0))


def test_the_headline_cap_keeps_a_pair_of_unknown_kind(tmp_path: Path) -> None:
    # A pair without alt_kind (a table written before kinds were judged) is neither a headline nor dropped by the
    # cap; the in-memory recipe dropped such rows from both sides of its split when they ranked past the limit.
    store = LakeStore(tmp_path / "lake")
    kinds = ["headline"] * 6 + ["description"] * 2 + [None] * 4
    urls = [f"https://img.example.cz/{i}.jpg" for i in range(len(kinds))]
    pairs = pl.DataFrame(
        {"page_url": "https://www.example.cz/", "domain": "www.example.cz", "image_url": urls, "alt_kind": kinds}
    ).with_columns(alt_text=pl.format("Obrázek číslo {}", pl.int_range(pl.len())))
    store.write_table("alt_text_pairs", "cs", pairs, "00")
    images = pl.DataFrame({"language": "cs", "image_url": urls, "image_sha256": [_sha(u) for u in urls]})
    store.write_table("images", "cs", images.with_columns(phash=pl.lit("0"), image_key=pl.col("image_sha256")), "00")
    built = build_d_know(store, CS, SHARDS, 0.5, writer(store, CS))
    table = store.read_table("d_know", "cs")
    assert table["alt_kind"].to_list().count(None) == 4 and table["alt_kind"].to_list().count("headline") == 2
    assert built.headline_over_mix == 4 and built.rows == 8


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.9])
def test_headlines_of_equal_rank_are_capped_in_row_order_as_cap_headlines_does(share: float) -> None:
    import duckdb

    from mella_assets.know.alt_kind import cap_headlines, headline_limit
    from mella_assets.know.d_know_build import _over_mix

    # Ranks collide only on a 64-bit hash collision; the tie-break must still be the in-memory one (row order).
    rng = random.Random(3)
    frame = pl.DataFrame(
        {
            "alt_kind": [rng.choice(["headline", "headline", "caption"]) for _ in range(60)],
            "rank": pl.Series([rng.randrange(5) for _ in range(60)], dtype=pl.UInt64),
            "page_url": [f"https://www.example.cz/{n // 7}" for n in range(60)],
            "origin": range(60),
        }
    )
    kept, _ = cap_headlines(frame, share, frame["rank"])
    headlines = frame["alt_kind"].eq("headline").sum()
    limit = headline_limit(headlines, frame.height - headlines, share)
    with duckdb.connect() as connection:
        connection.register("frame", frame.to_arrow())
        connection.execute("CREATE TABLE kept AS SELECT * FROM frame")
        over = _over_mix(connection, headlines, limit)
        origins = connection.execute(f"SELECT origin FROM kept WHERE NOT {over} ORDER BY origin").fetchall()
    assert [origin for (origin,) in origins] == kept["origin"].to_list()
