import polars as pl

from mella_assets.lib.dataset import assign_split, build_sft_records, prompts_for, split_leakage


def know(rows):
    return pl.DataFrame(
        rows,
        schema=["image_sha256", "image_key", "phash", "alt_text", "keywords", "page_url", "domain"],
        orient="row",
    )


def ling(rows):
    return pl.DataFrame(rows, schema=["image_sha256", "image_key", "phash", "text", "caption_en"], orient="row")


KNOW = know(
    [
        (f"sha{i}", f"images/s{i}.jpg", f"ph{i % 7}", f"Pražský hrad {i}", ["hrad"], "https://a.cz/p", "a.cz")
        for i in range(40)
    ]
)
LING = ling([(f"sha{i}", f"images/s{i}.jpg", f"ph{i % 7}", f"Popis {i}", f"Caption {i}") for i in range(40)])


def test_records_take_answers_from_alt_texts_and_translations_with_native_prompts():
    records = build_sft_records(KNOW.head(1), LING.head(1), "cs")
    by_source = {row["source"]: row for row in records.iter_rows(named=True)}
    assert by_source["know"]["text"] == "Pražský hrad 0"
    assert by_source["ling"]["text"] == "Popis 0"
    assert by_source["know"]["prompt"] in prompts_for("cs", "know")
    assert by_source["ling"]["prompt"] in prompts_for("cs", "ling")
    assert by_source["ling"]["caption_en"] == "Caption 0"


def test_near_duplicate_images_never_cross_splits():
    records = build_sft_records(KNOW, LING, "cs", test_fraction=0.3)
    assert split_leakage(records) == 0
    assert set(records["split"]) == {"train", "test"}
    # every record of one perceptual-hash group has the same split
    assert records.group_by("split_group").agg(pl.col("split").n_unique())["split"].max() == 1


def test_split_is_stable_when_new_data_arrives():
    before = build_sft_records(KNOW.head(20), LING.head(20), "cs")
    after = build_sft_records(KNOW, LING, "cs")
    joined = before.join(after, on="id", suffix="_after")
    assert joined.height == before.height
    assert (joined["split"] == joined["split_after"]).all()


def test_split_assignment_depends_only_on_the_group_key():
    assert assign_split("ph1", 0.2) == assign_split("ph1", 0.2)
    shares = [assign_split(f"group-{i}", 0.2) for i in range(2000)].count("test") / 2000
    assert 0.17 < shares < 0.23


def test_unknown_language_falls_back_to_english_prompts():
    assert prompts_for("xx", "know") == prompts_for("en", "know")
