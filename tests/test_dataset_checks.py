"""The checks on mella_dataset, run through real materializations: each blocking check fails on a crafted bad
partition and the training asset downstream does not run; on good data every check passes and training starts."""

import dagster as dg
import polars as pl
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, near_copy, picture, store_image

from mella_assets.dataset import assets as dataset_module
from mella_assets.dataset.assets import mella_dataset
from mella_assets.lib.lake import LakeStore
from mella_assets.partitions import LANGUAGE_PARTITIONS
from mella_assets.resources import Translator, build_resources
from mella_assets.resources.lake import Lake
from mella_assets.training.assets import finetuned_checkpoint

CHECKS = dg.load_asset_checks_from_modules([dataset_module])
BLOCKING = {
    "mella_dataset_schema",
    "mella_dataset_not_empty",
    "mella_dataset_split_leakage",
    "mella_dataset_language_purity",
    "mella_dataset_images_present",
}
WARNINGS = {"mella_dataset_duplicate_answers", "mella_dataset_answer_length"}


@pytest.fixture
def lake(tmp_path):
    """A cs partition of D_know and D_ling in real Czech with 12 real images (one a re-encoded copy)."""
    store = LakeStore(tmp_path / "lake")
    images = [store_image(store, picture(seed)) for seed in range(11)]
    images.append(store_image(store, near_copy(picture(0))))
    store.write_table("d_know", "cs", know_frame("cs", images, CZECH_ALTS[:12]))
    store.write_table("d_ling", "cs", ling_frame("cs", images, CZECH_CAPTIONS[:12]))
    return store


def materialize(store: LakeStore, dataset_asset=mella_dataset) -> dg.ExecuteInProcessResult:
    resources = {**build_resources(lake_root=str(store.root)), "translator": Translator(enforce_output_language=True)}
    return dg.materialize(
        [dataset_asset, *CHECKS, finetuned_checkpoint],
        partition_key="cs",
        resources=resources,
        raise_on_error=False,
    )


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def training_started(result: dg.ExecuteInProcessResult) -> bool:
    return any(
        e.event_type == dg.DagsterEventType.STEP_START and e.step_key == "finetuned_checkpoint"
        for e in result.all_events
    )


def crafted(frame: pl.DataFrame) -> dg.AssetsDefinition:
    """A stand-in producer that writes ``frame`` as the cs partition of mella_dataset (a table the real asset
    cannot produce, e.g. from an older code version or a hand edit); the real checks and training follow it."""

    @dg.asset(key="mella_dataset", partitions_def=LANGUAGE_PARTITIONS, group_name="dataset")
    def writer(lake: Lake) -> None:
        lake.write_table("mella_dataset", "cs", frame)

    return writer


def test_good_data_passes_every_check_and_training_starts(lake):
    result = materialize(lake)
    outcomes = check_outcomes(result)
    assert set(outcomes) == BLOCKING | WARNINGS
    assert all(outcomes[name] for name in BLOCKING), outcomes
    assert training_started(result)  # it fails later (no base model in this lake): the gate is what is tested
    # Each evaluation carries the run's language, so the UI lists it under the cs partition.
    assert {e.partition for e in result.get_asset_check_evaluations()} == {"cs"}


def test_a_language_without_records_fails_not_empty_and_training_does_not_run(lake):
    lake.write_table("d_know", "cs", lake.read_table("d_know", "cs").head(0))
    lake.write_table("d_ling", "cs", lake.read_table("d_ling", "cs").head(0))
    result = materialize(lake)
    assert check_outcomes(result)["mella_dataset_not_empty"] is False
    assert not training_started(result)


def test_answers_in_another_language_fail_purity_and_training_does_not_run(lake):
    know = lake.read_table("d_know", "cs")
    english = [f"A photo of a castle, a bridge or a market in the old town, number {n}" for n in range(know.height)]
    lake.write_table("d_know", "cs", know.with_columns(pl.Series("alt_text", english)))
    result = materialize(lake)
    outcomes = check_outcomes(result)
    assert outcomes["mella_dataset_language_purity"] is False
    assert outcomes["mella_dataset_not_empty"] is True
    assert not training_started(result)
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "mella_dataset_language_purity"
    )
    assert evaluation.metadata["purity_know"].value == 0.0
    assert evaluation.metadata["purity_ling"].value == 1.0


def test_a_missing_image_file_fails_images_present_and_training_does_not_run(lake):
    key = lake.read_table("d_know", "cs")["image_key"][3]
    lake.path(key).unlink()
    result = materialize(lake)
    assert check_outcomes(result)["mella_dataset_images_present"] is False
    assert not training_started(result)


def good_records(lake: LakeStore) -> pl.DataFrame:
    assert materialize(lake).success is False  # training fails without a base model; the table is written
    return lake.read_table("mella_dataset", "cs")


def test_a_table_with_a_broken_schema_fails_schema_and_training_does_not_run(lake):
    records = good_records(lake).with_columns(pl.lit("web").alias("source")).drop("image_sha256")
    result = materialize(lake, crafted(records))
    assert check_outcomes(result)["mella_dataset_schema"] is False
    assert not training_started(result)


def test_a_near_duplicate_in_both_splits_fails_leakage_and_training_does_not_run(lake):
    records = good_records(lake)
    copy = lake.read_table("d_know", "cs")["image_sha256"][11]  # the re-encoded copy of picture 0
    split_of_copy = records.filter(pl.col("image_sha256") == copy)["split"][0]
    flipped = "train" if split_of_copy == "test" else "test"
    leaked = records.with_columns(
        pl.when(pl.col("image_sha256") == copy).then(pl.lit(flipped)).otherwise("split").alias("split")
    )
    result = materialize(lake, crafted(leaked))
    outcomes = check_outcomes(result)
    assert outcomes["mella_dataset_split_leakage"] is False
    assert outcomes["mella_dataset_schema"] is True
    assert not training_started(result)
