"""The same end-to-end graph with the lake on a real S3 API (moto_server on loopback): every table has the same
rows as the local-lake run, DuckDB reads it over S3, and no secret reaches the event log."""

import hashlib
import json

import dagster as dg
import polars as pl
import pytest

from mella_assets.definitions import build_definitions
from mella_assets.demo.cc_crawl import DEMO_CRAWL
from mella_assets.demo.resources import demo_resources
from mella_assets.demo.run import demo_summary, materialize_everything
from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import LakeStore
from mella_assets.resources import Training
from support.s3 import MotoServer, apply_env, restore_env

pytestmark = pytest.mark.slow
# Columns that name where the lake is (file:// vs s3://) or when something ran, not what the data is.
LOCATION_OR_TIME_COLUMNS = {"uri", "warc_uri", "registered_at", "created_at", "export_uri"}


def content_digest(frame: pl.DataFrame) -> tuple[int, str]:
    """Row count and an order-independent hash of the rows (location and time columns left out)."""
    kept = frame.select([c for c in frame.columns if c not in LOCATION_OR_TIME_COLUMNS])
    rows = sorted(
        json.dumps(row, sort_keys=True, ensure_ascii=False, default=str) for row in kept.iter_rows(named=True)
    )
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def s3_demo(demo, tmp_path_factory):
    secret = "s3-secret-" + hashlib.sha256(b"mella").hexdigest()[:12]
    with MotoServer() as server:
        previous = apply_env({**server.env, "AWS_SECRET_ACCESS_KEY": secret})
        try:
            server.create_bucket("mella")
            lake = LakeStore("s3://mella/lake", cache_dir=tmp_path_factory.mktemp("s3-cache"))
            local = demo["lake"]
            for key in local.list("landing"):
                lake.put_bytes(key, local.get_bytes(key))
            for model in ("captioner", "translator"):
                lake.put_dir(f"models/tiny/{model}", demo["models_dir"] / model)
            resources = demo_resources(
                lake.root_uri, demo["port"], site_dir=str(demo["site_dir"]),
            )  # fmt: skip
            resources["training"] = Training(method="full", max_steps=60)
            home = tmp_path_factory.mktemp("s3-dagster-home")
            with dg.DagsterInstance.local_temp(str(home)) as instance:
                # The demo crawl is read from the local demo's index and WARC folder (MELLA_CC_*, set by `demo`).
                materialize_everything(demo["codes"], defs=build_definitions(resources), instance=instance,
                                       log=lambda line: None, crawls=(DEMO_CRAWL,))  # fmt: skip
                event_text = "\n".join(
                    str(record.dagster_event) for run in instance.get_runs() for record in instance.all_logs(run.run_id)
                )
                yield {"lake": lake, "secret": secret, "event_text": event_text}
        finally:
            restore_env(previous)


def test_every_table_on_s3_has_the_rows_of_the_local_run(demo, s3_demo):
    local, remote = demo["lake"], s3_demo["lake"]
    assert set(remote.tables()) == set(local.tables())
    for table in sorted(local.tables()):
        if local.has_table(table):
            mine, theirs = local.read_table(table), remote.read_table(table)
        else:
            mine, theirs = local.read_table_all_languages(table), remote.read_table_all_languages(table)
        assert content_digest(theirs) == content_digest(mine), table


def test_the_export_on_s3_is_byte_identical_to_the_local_one(demo, s3_demo):
    local, remote = demo["lake"], s3_demo["lake"]
    version = local.get_bytes("exports/LATEST").decode()
    keys = list(local.list(f"exports/{version}"))
    assert keys and keys == list(remote.list(f"exports/{version}"))
    for key in keys:
        assert remote.get_bytes(key) == local.get_bytes(key), key


def test_duckdb_reads_the_s3_lake(demo, s3_demo):
    assert demo_summary(s3_demo["lake"]).equals(demo_summary(demo["lake"]))
    counts = run_sql(s3_demo["lake"], "SELECT count(*) FROM d_know").item()
    assert counts == demo["lake"].read_table_all_languages("d_know").height


def test_no_secret_reaches_the_event_log(s3_demo):
    assert s3_demo["secret"] not in s3_demo["event_text"]
    assert len(s3_demo["event_text"]) > 10_000  # the log is really there
