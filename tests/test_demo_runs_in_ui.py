"""The demo's runs are the UI's runs: created for the demo code location's job (repository origin, the job's own
snapshot, ``mella/trigger=demo``), listed by the query the UI's job page sends, and re-executable from the UI."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import free_port
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.test.utils import execute_dagster_graphql

from mella_assets.cli import write_ui_workspace
from mella_assets.demo.cc_crawl import DEMO_CRAWL
from mella_assets.demo.run import (
    DEMO_CODE_LOCATION,
    DEMO_LOCATION_NAME,
    LANGUAGE_JOBS,
    configure_demo_environment,
    materialize_everything,
    prepare_demo_inputs,
)
from mella_assets.partitions import page_partition_keys
from mella_assets.sensors.phases import phase_of, requests_after, run_languages

pytestmark = pytest.mark.slow

# What the UI's job page asks for: the job's runs in its repository (the `.dagster/repository` tag).
JOB_RUNS = """
query JobRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results {
        runId status pipelineName pipelineSnapshotId
        repositoryOrigin { repositoryLocationName repositoryName }
        tags { key value }
      }
    }
  }
}
"""
JOB_SNAPSHOT = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { ... on Pipeline { pipelineSnapshotId } }
}
"""
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}
"""
REPOSITORY = "__repository__"


@pytest.fixture(scope="module")
def demo_one_language(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-ui")
    saved_env = dict(os.environ)
    saved_module = sys.modules.pop(DEMO_CODE_LOCATION, None)  # its resources are read from the environment
    try:
        port = free_port()
        configure_demo_environment(str(root / "lake"), str(root / "home"), port)
        prepare_demo_inputs(str(root / "lake"), ["cs"], port)
        instance = dg.DagsterInstance.get()
        lines: list[str] = []
        materialize_everything(
            ["cs"], instance=instance, jobs=("selection_job", *LANGUAGE_JOBS), crawls=(DEMO_CRAWL,), log=lines.append
        )
        yield {"instance": instance, "lines": lines}
        instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.modules.pop(DEMO_CODE_LOCATION, None)
        if saved_module is not None:
            sys.modules[DEMO_CODE_LOCATION] = saved_module


def ui_workspace(instance) -> WorkspaceProcessContext:
    """The workspace `mella ui` serves (the workspace.yaml it writes for the demo lake): a code server process."""
    target = WorkspaceFileTarget(paths=[write_ui_workspace(os.environ["DAGSTER_HOME"], DEMO_CODE_LOCATION)])
    return WorkspaceProcessContext(instance, target)


def query(workspace: WorkspaceProcessContext, text: str, variables: dict) -> dict:
    result = execute_dagster_graphql(workspace.create_request_context(), text, variables)
    assert not result.errors, result.errors
    return result.data


def wait_until_finished(workspace: WorkspaceProcessContext, run_id: str, timeout_s: float = 900.0) -> dg.DagsterRun:
    """Dequeues like the daemon under `make ui` does, then waits for the launched run to finish."""
    instance, daemon = workspace.instance, QueuedRunCoordinatorDaemon(interval_seconds=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status == dg.DagsterRunStatus.QUEUED:
            list(daemon.run_iteration(workspace))
        elif run.is_finished:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {timeout_s} s")


def test_demo_runs_are_listed_on_the_job_page_with_their_code_location_and_re_execute(demo_one_language):
    instance = demo_one_language["instance"]
    # The demo's feedback: a line per finished step with its seconds.
    assert any(re.fullmatch(r" {4}alt_text_pairs +\d+\.\d s", line) for line in demo_one_language["lines"])
    label = f"{REPOSITORY}@{DEMO_LOCATION_NAME}"
    with ui_workspace(instance) as workspace:
        assert workspace.create_request_context().get_code_location(DEMO_LOCATION_NAME) is not None
        runs_filter = {
            "pipelineName": "language_pipeline_job",
            "tags": [{"key": ".dagster/repository", "value": label}],
        }
        runs = query(workspace, JOB_RUNS, {"filter": runs_filter})["runsOrError"]["results"]
        assert len(runs) == 1
        (run,) = runs
        assert run["status"] == "SUCCESS"
        assert run["repositoryOrigin"] == {"repositoryLocationName": DEMO_LOCATION_NAME, "repositoryName": REPOSITORY}
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert tags["mella/trigger"] == "demo"
        assert tags["dagster/partition"] == "cs"

        # The same snapshot as the served job: the UI re-executes it without "may be a different version".
        selector = {"repositoryLocationName": DEMO_LOCATION_NAME, "repositoryName": REPOSITORY}
        job = query(workspace, JOB_SNAPSHOT, {"selector": {**selector, "pipelineName": "language_pipeline_job"}})
        assert job["pipelineOrError"]["pipelineSnapshotId"] == run["pipelineSnapshotId"]

        launched = query(workspace, REEXECUTE, {"params": {"parentRunId": run["runId"], "strategy": "ALL_STEPS"}})
        outcome = launched["launchPipelineReexecution"]
        assert outcome["__typename"] == "LaunchRunSuccess", outcome
        rerun = wait_until_finished(workspace, outcome["run"]["runId"])
        assert rerun.status == dg.DagsterRunStatus.SUCCESS
        assert rerun.parent_run_id == run["runId"]
        assert rerun.tags["dagster/partition"] == "cs"
        successes = instance.get_records_for_run(rerun.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
        assert {"d_know", "mllm_captions", "mella_dataset"} <= {record.event_log_entry.step_key for record in successes}

        # The language's per-page stages ran before it as language × shard runs, listed under their own job.
        shard_filter = {**runs_filter, "pipelineName": "shard_pipeline_job"}
        shard_runs = query(workspace, JOB_RUNS, {"filter": shard_filter})["runsOrError"]["results"]
        partitions = sorted({tag["key"]: tag["value"] for tag in r["tags"]}["dagster/partition"] for r in shard_runs)
        assert partitions == [str(key) for key in page_partition_keys("cs")]
        assert all(r["status"] == "SUCCESS" for r in shard_runs)
        # ... after the demo crawl's selection (its Common Crawl path: index, then range reads in raw_crawl).
        selection_filter = {**runs_filter, "pipelineName": "selection_job"}
        (selection,) = query(workspace, JOB_RUNS, {"filter": selection_filter})["runsOrError"]["results"]
        assert {tag["key"]: tag["value"] for tag in selection["tags"]}["dagster/partition"] == DEMO_CRAWL


def test_a_language_x_shard_backfill_launched_from_the_ui_runs_mella_shards_per_run_shards_per_run(
    demo_one_language, monkeypatch
):
    """The backfill the README launches (shard_pipeline_job's assets, a language's shards), through the UI's mutation
    and Dagster's own backfill daemon: with MELLA_SHARDS_PER_RUN=2 the code location's backfill policy gives each run
    two shards (a partition range), and every shard's partition is materialized with its own counts."""
    instance = demo_one_language["instance"]
    # Read by the code server the workspace starts (this process keeps the suite's one shard).
    monkeypatch.setenv("MELLA_SHARDS", "4")
    monkeypatch.setenv("MELLA_SHARDS_PER_RUN", "2")
    keys = [f"cs|{shard:02d}" for shard in range(4)]
    shard_tables = ("raw_crawl", "alt_text_pairs", "alt_text_rejects", "images", "image_rejects")
    params = {"partitionNames": keys, "assetSelection": [{"path": [name]} for name in shard_tables]}
    with ui_workspace(instance) as workspace:
        launched = query(workspace, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        daemon, logger = QueuedRunCoordinatorDaemon(interval_seconds=1), logging.getLogger("backfill")
        deadline = time.monotonic() + 900
        while instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED:
            assert time.monotonic() < deadline, "backfill still running after 900 s"
            list(execute_backfill_iteration(workspace, logger))  # what the daemon under `make ui` does
            list(daemon.run_iteration(workspace))
            time.sleep(1)
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    ranges = sorted(
        (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) for run in runs
    )
    assert ranges == [("cs|00", "cs|01"), ("cs|02", "cs|03")]
    # language_phases_sensor follows a backfill's range runs too: the language's run comes next.
    last = max(runs, key=lambda run: run.tags["dagster/asset_partition_range_start"])
    assert run_languages(last) == ["cs"] and phase_of(last) == "shard_pipeline_job"
    assert [(r.job_name, r.partition_key) for r in requests_after(instance, last)] == [("language_pipeline_job", "cs")]
    lake = Path(os.environ["MELLA_LAKE"])
    for table in shard_tables:
        rows = {}
        for run in runs:
            for record in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records:
                materialization = record.event_log_entry.asset_materialization
                if materialization.asset_key == dg.AssetKey(table):
                    rows[materialization.partition] = materialization.metadata["dagster/row_count"].value
        # One materialization per shard, each with the row count of the file that shard wrote.
        assert rows == {key: pl.scan_parquet(lake / f"tables/{table}/language=cs/shard={key[-2:]}/data.parquet")
                        .select(pl.len()).collect().item() for key in keys}, table  # fmt: skip
