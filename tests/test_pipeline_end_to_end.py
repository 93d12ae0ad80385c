"""The whole lineage, crawl files → evaluation report, for every configured language, on the demo corpus with
the tiny models; then the same instance served by the Dagster webserver and read over GraphQL."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import dagster as dg
import polars as pl
import pytest
from conftest import free_port

from mella_assets.definitions import language_pipeline_assets
from mella_assets.demo.cc_crawl import DEMO_CRAWL
from mella_assets.demo.run import demo_summary
from mella_assets.jobs import LANGUAGE_PHASES, phase_partition_keys
from mella_assets.languages import LANGUAGES
from mella_assets.partitions import page_partition_keys
from mella_assets.tables import TABLES

pytestmark = pytest.mark.slow
CODES = list(LANGUAGES)
# The language pipeline job's stages (mella_assets/jobs.py), then evaluation.
PER_LANGUAGE_ASSETS = [*(asset.node_def.name for asset in language_pipeline_assets()), "evaluation_scores"]
GLOBAL_ASSETS = ["mella_export", "finetuned_checkpoint", "evaluation_report"]


def test_every_asset_is_materialized_for_every_language(demo):
    instance = demo["instance"]
    shards = {str(key) for code in CODES for key in page_partition_keys(code)}
    for name in PER_LANGUAGE_ASSETS:
        expected = shards if TABLES[name].sharded else set(CODES)
        assert instance.get_materialized_partitions(dg.AssetKey(name)) == expected, name
    for name in GLOBAL_ASSETS:
        assert instance.get_latest_materialization_event(dg.AssetKey(name)) is not None, name


def test_every_language_yields_know_and_ling_pairs_and_both_splits(demo):
    summary = demo_summary(demo["lake"])
    assert summary["language"].to_list() == sorted(CODES)
    for row in summary.iter_rows(named=True):
        assert row["pages"] >= 6 and row["candidate_images"] > row["d_know"] > 0, row
        assert row["d_ling"] > 0 and row["train"] > 0 and row["test"] > 0, row
        assert row["kw_acc_base"] is not None and row["meteor_tuned"] is not None, row


def test_noise_in_the_pages_is_rejected_with_reasons(demo):
    lake = demo["lake"]
    alt_reasons = set(lake.read_table_all_languages("alt_text_rejects")["reason"])
    assert {"missing_alt", "empty_alt", "alt_is_filename", "alt_boilerplate", "wrong_language"} <= alt_reasons
    image_reasons = set(lake.read_table_all_languages("image_rejects")["reason"])
    assert {"http_error_404", "not_decodable"} <= image_reasons


def test_metadata_reports_counts_rejects_and_wall_time(demo):
    event = demo["instance"].get_latest_materialization_event(dg.AssetKey("alt_text_pairs"))
    metadata = event.asset_materialization.metadata
    assert {"rows_in", "rows_out", "rows_rejected", "rejected_by_reason", "wall_seconds", "preview"} <= set(metadata)
    assert metadata["rows_in"].value == metadata["rows_out"].value + metadata["rows_rejected"].value
    # Every page of the partition is counted under the language prior its signals gave (or "none").
    by_prior = metadata["pages_by_page_language"].value
    assert by_prior and all(isinstance(n, int) and n > 0 for n in by_prior.values())


def test_training_ran_through_pipes_and_evaluation_compares_both_models(demo):
    lake = demo["lake"]
    latest = json.loads(lake.get_bytes("checkpoints/LATEST.json"))
    assert latest["method"] == "full"
    assert lake.exists(f"{latest['checkpoint_key']}/model.safetensors")
    event = demo["instance"].get_latest_materialization_event(dg.AssetKey("finetuned_checkpoint"))
    metadata = event.asset_materialization.metadata
    assert metadata["final_loss"].value < metadata["first_loss"].value
    scores = lake.read_table_all_languages("evaluation_scores")
    assert set(scores["model"]) == {"base", "finetuned"}
    assert set(scores["metric"]) == {"keyword_accuracy", "meteor", "chrf"}
    assert lake.exists("reports/evaluation_report.png")


def test_rerunning_a_partition_gives_the_same_rows_and_reuses_model_outputs(demo):
    lake, defs, instance = demo["lake"], demo["defs"], demo["instance"]
    tables = [
        "raw_crawl",
        "alt_text_pairs",
        "alt_text_rejects",
        "images",
        "d_know",
        "mllm_captions",
        "translations",
        "d_ling",
        "mella_dataset",
    ]
    before = {name: lake.read_table(name, "cs") for name in tables}
    for job_name, sharded in LANGUAGE_PHASES:
        for key in phase_partition_keys(sharded, "cs"):
            result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, partition_key=key)
            assert result.success, key
    for name in tables:
        assert lake.read_table(name, "cs").equals(before[name]), name
    captions = instance.get_latest_materialization_event(dg.AssetKey("mllm_captions")).asset_materialization
    assert captions.metadata["generated"].value == 0
    assert captions.metadata["from_cache"].value == before["mllm_captions"].height


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def test_the_dagster_ui_serves_the_assets_partitions_and_demo_materializations(demo):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(demo["home"]), "MELLA_LAKE": str(demo["lake"].root)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-m",
            "mella_assets.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "webserver did not start"
                time.sleep(0.5)
        nodes = graphql(port, "{ assetNodes { assetKey { path } partitionKeys } }")["assetNodes"]
        partitions = {node["assetKey"]["path"][-1]: node["partitionKeys"] for node in nodes}
        assert set(PER_LANGUAGE_ASSETS + GLOBAL_ASSETS) <= set(partitions)
        shards = sorted(str(key) for code in CODES for key in page_partition_keys(code))
        for name in PER_LANGUAGE_ASSETS:  # the per-page stages by language × shard, the others by language
            assert sorted(partitions[name]) == (shards if TABLES[name].sharded else sorted(CODES)), name
        assert partitions["cc_selection"] == [DEMO_CRAWL]
        latest = graphql(
            port,
            '{ assetOrError(assetKey: {path: ["d_know"]}) { ... on Asset { assetMaterializations(limit: 50) '
            "{ partition } } } }",
        )["assetOrError"]["assetMaterializations"]
        assert {m["partition"] for m in latest} == set(CODES)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_report_table_has_every_language(demo):
    report = demo["lake"].read_table("evaluation_report")
    assert sorted(report["language"].unique()) == sorted(CODES)
    assert report.filter(pl.col("metric") == "keyword_accuracy").height == 2 * len(CODES)
