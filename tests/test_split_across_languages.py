"""No test image of any language, nor a near duplicate of one, is in any language's train split (issue #18, item 6).

Languages share pictures (the same bytes, and resized re-encoded copies), built in either order, through the
library and through the real mella_dataset asset; a table written without the rule (an older version) is caught by
the asset's blocking leakage check and by the training gate."""

import dagster as dg
import polars as pl
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, near_copy, picture, store_image

from mella_assets.dataset import assets as dataset_module
from mella_assets.dataset.assets import mella_dataset
from mella_assets.dataset.build import (
    SplitPolicy,
    build_sft_records,
    cross_language_leaks,
    cross_language_problems,
    other_language_links,
)
from mella_assets.know.images import ValidatedImage, hamming
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore
from mella_assets.partitions import LANGUAGE_PARTITIONS
from mella_assets.resources import Translator, build_resources
from mella_assets.resources.lake import Lake
from mella_assets.training.assets import check_training_gate

POLICY = SplitPolicy(test_groups_per_source=6, max_test_share=0.5)
CHECKS = dg.load_asset_checks_from_modules([dataset_module])


@pytest.fixture(scope="module")
def shared_lake(tmp_path_factory):
    """Three languages over 36 pictures: cs has 0-17, ru has 9-26 (9-17: the same files as cs) and resized
    re-encoded copies of 0-5, hu has 18-35 and copies of 9-11 and 24-26 (near duplicates of both others)."""
    store = LakeStore(tmp_path_factory.mktemp("lake"))
    originals = [store_image(store, picture(seed)) for seed in range(36)]
    copies = {seed: store_image(store, near_copy(picture(seed))) for seed in [*range(6), 9, 10, 11, 24, 25, 26]}
    images = {
        "cs": originals[0:18],
        "ru": originals[9:27] + [copies[s] for s in range(6)],
        "hu": originals[18:36] + [copies[s] for s in (9, 10, 11, 24, 25, 26)],
    }
    return store, images


def inputs(code: str, images: list[ValidatedImage]) -> tuple[pl.DataFrame, pl.DataFrame]:
    alts = [f"{CZECH_ALTS[i % len(CZECH_ALTS)]} ({code} {i})" for i in range(len(images))]
    captions = [f"{CZECH_CAPTIONS[i % len(CZECH_CAPTIONS)]} ({code} {i})" for i in range(len(images))]
    return know_frame(code, images, alts, domain=f"{code}.example"), ling_frame(code, images, captions)


def build(store: LakeStore, code: str, images: list[ValidatedImage], across: bool = True) -> pl.DataFrame:
    """Build and write one language as the asset does (``across=False``: as before, blind to other languages)."""
    know, ling = inputs(code, images)
    frame = pl.DataFrame({"image_sha256": [i.sha256 for i in images], "phash": [i.phash for i in images]})
    others = other_language_links(store, code, frame, POLICY.max_distance) if across else None
    previous = store.read_table("mella_dataset", code) if store.has_table("mella_dataset", code) else None
    records = build_sft_records(know, ling, LANGUAGES[code], split=POLICY, previous=previous, others=others).records
    store.write_table("mella_dataset", code, records)
    return records


def brute_force_leaks(store: LakeStore) -> set[tuple[str, str, str, str]]:
    """(test language, test image, train language, train image) over every pair of records of two languages whose
    images are the same file or within 8 dHash bits: compared one by one, no index."""
    rows = store.read_table_all_languages("mella_dataset").select("language", "image_sha256", "phash", "split")
    rows = rows.unique().to_dicts()
    return {
        (a["language"], a["image_sha256"], b["language"], b["image_sha256"])
        for a in rows
        if a["split"] == "test"
        for b in rows
        if b["split"] == "train"
        and a["language"] != b["language"]
        and (a["image_sha256"] == b["image_sha256"] or hamming(a["phash"], b["phash"]) <= 8)
    }


def clear(store: LakeStore) -> None:
    for code in ("cs", "ru", "hu"):
        store.delete(store.table_key("mella_dataset", code))


@pytest.mark.parametrize("order", [("cs", "ru", "hu"), ("hu", "ru", "cs"), ("ru", "hu", "cs")])
def test_no_test_image_of_any_language_is_in_any_languages_train_split(shared_lake, order):
    store, images = shared_lake
    clear(store)
    for code in order:
        build(store, code, images[code])
    assert brute_force_leaks(store) == set()
    assert cross_language_leaks(store).is_empty()
    records = store.read_table_all_languages("mella_dataset")
    # the shared pictures reach test somewhere, so the rule had something to do (not a vacuous pass)
    shared = {i.sha256 for i in images["cs"]} & {i.sha256 for i in images["ru"]}
    assert records.filter(pl.col("image_sha256").is_in(list(shared)) & (pl.col("split") == "test")).height > 0
    for code in order:
        assert set(records.filter(pl.col("language") == code)["split"]) == {"train", "test"}


def test_languages_built_blind_to_each_other_leak_and_both_checks_see_it(shared_lake):
    store, images = shared_lake
    clear(store)
    for code in ("cs", "ru", "hu"):
        build(store, code, images[code], across=False)
    expected = brute_force_leaks(store)
    assert expected  # the setup shares enough pictures to leak without the rule
    leaks = cross_language_leaks(store)
    found = {
        (r["language"], r["image_sha256"], r["other_language"], r["other_image_sha256"])
        for r in leaks.filter(pl.col("split") == "test").iter_rows(named=True)
    }
    assert found == expected
    problems = cross_language_problems(store)
    assert set(problems) == {test_language for test_language, *_ in expected} | {
        train_language for _, _, train_language, _ in expected
    }
    with pytest.raises(dg.Failure, match="fails its blocking checks") as failure:
        check_training_gate(store.read_table_all_languages("mella_dataset"), store)
    assert set(failure.value.metadata["problems"].value) == set(problems)


def test_a_language_without_shared_images_gets_the_records_it_got_alone(shared_lake, tmp_path):
    _, images = shared_lake
    alone = LakeStore(tmp_path / "alone")
    expected = build(alone, "cs", images["cs"])
    together = LakeStore(tmp_path / "together")
    build(together, "hu", [i for i in images["hu"] if i.sha256 not in {c.sha256 for c in images["cs"]}][:12])
    assert build(together, "cs", images["cs"]).equals(expected)


def materialize_dataset(store: LakeStore, code: str) -> dg.ExecuteInProcessResult:
    resources = {**build_resources(lake_root=str(store.root)), "translator": Translator(enforce_output_language=True)}
    config = {"ops": {"mella_dataset": {"config": {"test_groups_per_source": 6, "max_test_share": 0.5}}}}
    return dg.materialize([mella_dataset], partition_key=code, resources=resources, run_config=config)


@pytest.mark.parametrize("order", [("cs", "ru"), ("ru", "cs")])
def test_the_dataset_asset_honours_the_other_languages_in_either_order(shared_lake, tmp_path, order):
    _, images = shared_lake
    lake = LakeStore(tmp_path / "lake")
    for code in order:
        know, ling = inputs(code, images[code])
        lake.write_table("d_know", code, know)
        lake.write_table("d_ling", code, ling)
    for code in order:
        result = materialize_dataset(lake, code)
        stats = result.asset_materializations_for_node("mella_dataset")[0].metadata["split_stats"].value
    assert stats["clusters_shared_with_other_languages"] > 0  # the second language saw the first
    assert brute_force_leaks(lake) == set()


def test_a_leak_planted_by_an_older_table_fails_the_blocking_check_and_the_gate(shared_lake):
    store, images = shared_lake
    clear(store)
    build(store, "cs", images["cs"])
    # ru written by a version blind to cs (a table from before the rule): a cs test picture in ru's train split
    ru = build(store, "ru", images["ru"], across=False)
    cs_test = set(store.read_table("mella_dataset", "cs").filter(pl.col("split") == "test")["image_sha256"])
    planted = ru.with_columns(
        pl.when(pl.col("image_sha256").is_in(list(cs_test))).then(pl.lit("train")).otherwise("split").alias("split")
    )
    store.write_table("mella_dataset", "ru", planted)
    assert brute_force_leaks(store)

    @dg.asset(key="mella_dataset", partitions_def=LANGUAGE_PARTITIONS, group_name="dataset")
    def older_writer(lake: Lake) -> None:
        lake.write_table("mella_dataset", "ru", planted)

    resources = {**build_resources(lake_root=str(store.root)), "translator": Translator()}
    result = dg.materialize([older_writer, *CHECKS], partition_key="ru", resources=resources, raise_on_error=False)
    leakage = next(e for e in result.get_asset_check_evaluations() if e.check_name == "mella_dataset_split_leakage")
    assert leakage.passed is False
    assert leakage.metadata["leaked_image_clusters"].value == 0  # ru alone is consistent: the leak is across
    assert leakage.metadata["cross_language_leaks"].value > 0
    with pytest.raises(dg.Failure) as failure:
        check_training_gate(store.read_table_all_languages("mella_dataset"), store)
    problems = failure.value.metadata["problems"].value
    assert set(problems) == {"cs", "ru"}
    assert any("train images are (or nearly are) test images of another language (cs)" in p for p in problems["ru"])
    # rebuilt by this version (test wins: the train copies move to test), the languages pass the gate again
    build(store, "ru", images["ru"])
    build(store, "cs", images["cs"])
    assert cross_language_leaks(store).is_empty()
    check_training_gate(store.read_table_all_languages("mella_dataset"), store)
