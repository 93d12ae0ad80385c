import json
import time

import dagster as dg
import polars as pl
from dagster._core.utils import make_new_run_id

from mella_assets.definitions import materialize_language
from mella_assets.lib.checkpoints import write_latest_checkpoint
from mella_assets.lib.lake import LakeStore
from mella_assets.resources.lake import Lake
from mella_assets.resources.training import Training
from mella_assets.sensors import crawl_landing_sensor, retraining_sensor
from mella_assets.sensors.evaluation import training_failure_message


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


def retrain(lake_root, cursor=None, instance=None, **policy):
    settings = {"retrain_min_new_rows": 10, "retrain_cooldown_seconds": 3600, **policy}
    resources = {"lake": Lake(root=str(lake_root)), "training": Training(**settings)}

    def tick(inst):
        return retraining_sensor(dg.build_sensor_context(instance=inst, cursor=cursor, resources=resources))

    if instance is not None:
        return tick(instance)
    with dg.instance_for_test() as inst:
        return tick(inst)


def test_growth_below_the_threshold_requests_no_run(tmp_path):
    store = LakeStore(tmp_path)
    write_dataset(store, 25)
    write_latest_checkpoint(store, {"checkpoint_key": "checkpoints/a", "train_rows": 20})
    result = retrain(tmp_path)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == "5 new train rows since the latest checkpoint; retraining needs 10"


def test_growth_above_the_threshold_requests_exactly_one_run_then_cools_down(tmp_path):
    store = LakeStore(tmp_path)
    write_dataset(store, 30)
    write_latest_checkpoint(store, {"checkpoint_key": "checkpoints/a", "train_rows": 20})
    first = retrain(tmp_path)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags == {"mella/trigger": "dataset_growth", "mella/growth": "10"}
    assert json.loads(first.cursor)["requests"] == 1

    write_dataset(store, 60)  # more growth, but inside the cool-down: nothing
    cooling = retrain(tmp_path, cursor=first.cursor)
    assert cooling.run_requests == []
    assert cooling.skip_reason.skip_message.startswith("cool-down: last request")
    assert cooling.cursor == first.cursor

    expired = json.dumps({**json.loads(first.cursor), "last_request_at": time.time() - 3601})
    again = retrain(tmp_path, cursor=expired)
    assert len(again.run_requests) == 1
    assert again.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_growth_share_threshold_also_triggers(tmp_path):
    store = LakeStore(tmp_path)
    write_dataset(store, 24)
    write_latest_checkpoint(store, {"checkpoint_key": "checkpoints/a", "train_rows": 20})
    assert retrain(tmp_path, retrain_min_new_rows=100).run_requests == []
    assert len(retrain(tmp_path, retrain_min_new_rows=100, retrain_min_growth_share=0.2).run_requests) == 1


def test_no_request_while_the_concurrent_training_cap_is_reached(tmp_path):
    write_dataset(LakeStore(tmp_path), 30)
    with dg.instance_for_test() as instance:
        instance.add_run(
            dg.DagsterRun(job_name="training_job", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED)
        )
        capped = retrain(tmp_path, instance=instance)
        assert capped.run_requests == []
        assert capped.skip_reason.skip_message == "1 training run(s) queued or in progress (cap 1)"
        assert len(retrain(tmp_path, instance=instance, retrain_max_concurrent_runs=2).run_requests) == 1


def test_retraining_before_any_checkpoint_counts_all_train_rows(tmp_path):
    write_dataset(LakeStore(tmp_path), 12)
    assert len(retrain(tmp_path).run_requests) == 1


def test_failure_message_names_the_error_and_the_resume_step():
    assert training_failure_message("r1", "Process exited with -9 ", {"abc": 20}) == (
        "training run r1 failed: Process exited with -9; a rematerialization resumes from step 20 (abc)"
    )
    assert training_failure_message("r2", "", {}) == (
        "training run r2 failed: no error message; no resume state saved, a rerun starts from step 0"
    )


def test_the_landing_sensor_starts_from_what_the_lake_already_extracted(tmp_path):
    """Switched on after the demo (an empty cursor), it requests nothing for the WARCs a run already registered and
    extracted; a WARC landing afterwards requests exactly one run for its language."""
    from mella_assets.crawl.assets import crawl_sources, raw_crawl
    from mella_assets.demo.corpus import build_demo_corpus

    build_demo_corpus(tmp_path, "http://127.0.0.1:9", ["cs", "vi"])
    result = materialize_language("cs", [crawl_sources, raw_crawl], resources={"lake": Lake(root=str(tmp_path))})
    assert result.success
    store = LakeStore(tmp_path)
    landed_cs = sorted(key for key in store.list("landing/cs") if key.endswith(".warc.gz"))
    assert landed_cs and sorted(store.read_table("crawl_sources", "cs")["key"]) == landed_cs

    first = evaluate(crawl_landing_sensor, tmp_path)
    # vi landed but was never materialized: it is new; cs is not.
    assert [r.partition_key for r in first.run_requests] == ["vi"]
    assert set(json.loads(first.cursor)) >= set(landed_cs)

    store.put_bytes("landing/cs/crawl-new.warc.gz", store.get_bytes(landed_cs[0]))
    second = evaluate(crawl_landing_sensor, tmp_path, cursor=first.cursor)
    assert [(r.partition_key, r.tags["mella/new_files"]) for r in second.run_requests] == [("cs", "1")]


def test_a_landing_file_that_changed_since_it_was_extracted_is_new_on_the_first_tick(tmp_path):
    from mella_assets.crawl.assets import crawl_sources, raw_crawl
    from mella_assets.demo.corpus import build_demo_corpus

    build_demo_corpus(tmp_path, "http://127.0.0.1:9", ["cs"])
    assert materialize_language("cs", [crawl_sources, raw_crawl], resources={"lake": Lake(root=str(tmp_path))}).success
    assert evaluate(crawl_landing_sensor, tmp_path).run_requests == []
    store = LakeStore(tmp_path)
    key = sorted(store.list("landing/cs"))[0]
    store.put_bytes(key, store.get_bytes(key) + b"\n")  # rewritten with a different size after extraction
    assert [r.partition_key for r in evaluate(crawl_landing_sensor, tmp_path).run_requests] == ["cs"]
