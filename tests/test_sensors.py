import json

import dagster as dg
import polars as pl

from mella_assets.lib.checkpoints import write_latest_checkpoint
from mella_assets.lib.lake import LakeStore
from resources.lake import Lake
from sensors import crawl_landing_sensor, retraining_sensor


def evaluate(sensor, lake_root, cursor=None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"lake": Lake(root=str(lake_root))}
        )
        return sensor(context)


def test_a_new_warc_requests_exactly_one_run_for_its_language(tmp_path):
    store = LakeStore(tmp_path)
    store.put_bytes("landing/cs/crawl-1.warc.gz", b"first")
    store.put_bytes("landing/vi/crawl-1.warc.gz", b"first")
    first = evaluate(crawl_landing_sensor, tmp_path)
    assert sorted(r.partition_key for r in first.run_requests) == ["cs", "vi"]

    quiet = evaluate(crawl_landing_sensor, tmp_path, cursor=first.cursor)
    assert quiet.run_requests == []

    store.put_bytes("landing/cs/crawl-2.warc.gz", b"second")
    store.put_bytes("landing/cs/notes.txt", b"not a warc")
    second = evaluate(crawl_landing_sensor, tmp_path, cursor=quiet.cursor)
    assert [r.partition_key for r in second.run_requests] == ["cs"]
    assert second.run_requests[0].tags["mella/new_files"] == "1"
    assert "landing/cs/crawl-2.warc.gz" in json.loads(second.cursor)


def test_landing_files_of_unconfigured_languages_are_ignored(tmp_path):
    LakeStore(tmp_path).put_bytes("landing/xx/crawl.warc.gz", b"x")
    assert evaluate(crawl_landing_sensor, tmp_path).run_requests == []


def write_dataset(store, train_rows):
    frame = pl.DataFrame({"language": ["cs"] * (train_rows + 3), "split": ["train"] * train_rows + ["test"] * 3})
    store.write_table("mella_dataset", "cs", frame)


def test_retraining_waits_for_the_configured_growth(tmp_path, monkeypatch):
    monkeypatch.setenv("MELLA_RETRAIN_MIN_NEW_ROWS", "10")
    store = LakeStore(tmp_path)
    write_dataset(store, 25)
    write_latest_checkpoint(store, {"checkpoint_key": "checkpoints/a", "train_rows": 20})
    skipped = evaluate(retraining_sensor, tmp_path)
    assert isinstance(skipped, dg.SkipReason)
    assert "5 new train rows" in skipped.skip_message

    write_dataset(store, 30)
    result = evaluate(retraining_sensor, tmp_path)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["mella/growth"] == "10"


def test_retraining_before_any_checkpoint_counts_all_train_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("MELLA_RETRAIN_MIN_NEW_ROWS", "10")
    write_dataset(LakeStore(tmp_path), 12)
    assert len(evaluate(retraining_sensor, tmp_path).run_requests) == 1
