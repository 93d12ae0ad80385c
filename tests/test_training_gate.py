"""Bad data never reaches training, even when training_job runs without rematerializing mella_dataset."""

import dagster as dg
import polars as pl
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, picture, store_image

from mella_assets.dataset.build import build_sft_records, training_gate_problems
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore
from mella_assets.resources import Lake, Training
from mella_assets.training.assets import finetuned_checkpoint


@pytest.fixture
def lake_with_good_dataset(tmp_path):
    store = LakeStore(tmp_path)
    images = [store_image(store, picture(seed)) for seed in range(len(CZECH_ALTS))]
    build = build_sft_records(
        know_frame("cs", images, CZECH_ALTS), ling_frame("cs", images, CZECH_CAPTIONS), LANGUAGES["cs"]
    )
    store.write_table("mella_dataset", "cs", build.records)
    return store


def test_a_good_partition_passes_the_gate(lake_with_good_dataset):
    records = lake_with_good_dataset.read_table("mella_dataset", "cs")
    assert set(records["split"]) == {"train", "test"}
    assert training_gate_problems(records, "cs", lake_with_good_dataset.exists) == []


def test_the_gate_names_leakage_missing_images_and_a_missing_split(lake_with_good_dataset):
    store = lake_with_good_dataset
    records = store.read_table("mella_dataset", "cs")
    test_image = records.filter(pl.col("split") == "test")["image_sha256"][0]
    leaked = records.with_columns(
        pl.when((pl.col("image_sha256") == test_image) & (pl.col("source") == "ling"))
        .then(pl.lit("train"))
        .otherwise(pl.col("split"))
        .alias("split")
    )
    assert training_gate_problems(leaked, "cs", store.exists) == ["1 image clusters in both train and test"]
    missing = training_gate_problems(records, "cs", lambda key: key != records["image_key"][0])
    assert missing == [f"1 image files missing, e.g. {records['image_key'][0]}"]
    only_train = records.filter(pl.col("split") == "train")
    assert training_gate_problems(only_train, "cs", store.exists) == [
        "splits present: ['train'] (train and test needed)"
    ]


def test_training_refuses_a_lake_whose_dataset_fails_a_blocking_check(lake_with_good_dataset):
    store = lake_with_good_dataset
    records = store.read_table("mella_dataset", "cs")
    store.write_table("mella_dataset", "cs", records.with_columns(pl.lit("train").alias("split")))
    result = dg.materialize(
        [finetuned_checkpoint],
        resources={
            "lake": Lake(root=str(store.root)),
            "training": Training(base_model="/nonexistent/model"),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "fails its blocking checks" in failure.step_failure_data.error.message
    assert not store.exists("checkpoints/LATEST.json")
