"""The closed loop through the Dagster instance: a WARC lands → crawl sensor tick → pipeline run → the dataset
grows → retraining sensor tick → training run (Pipes) → the automation conditions request evaluation runs for every
language → then the report; then a training subprocess killed by SIGKILL resumes from its last saved step when
rematerialized.

Sensor ticks are evaluated with ``build_sensor_context`` / ``build_run_status_sensor_context`` on the real
instance, automation ticks with ``dg.evaluate_automation_conditions`` (what the automation condition sensor runs);
every request is executed with its job's ``execute_in_process`` on that instance. Two languages (cs, vi) keep the
runtime small."""

import json
import os
import shutil
import signal
import socket
import threading
import time

import dagster as dg
import polars as pl
import pytest

from mella_assets.definitions import build_definitions
from mella_assets.demo.corpus import build_demo_corpus, demo_texts
from mella_assets.demo.resources import demo_resources
from mella_assets.demo.run import QUIET_RUN_CONFIG
from mella_assets.demo.site import ensure_demo_site_server
from mella_assets.demo.tiny_models import build_tiny_models
from mella_assets.lib.lake import LakeStore
from mella_assets.partitions import page_partition_keys
from mella_assets.resources import Captioner, Training, Translator
from mella_assets.sensors import (
    crawl_landing_sensor,
    language_phases_sensor,
    retraining_sensor,
    training_failure_sensor,
)
from mella_assets.training.sft import PID_FILE, resume_info

pytestmark = pytest.mark.slow
CODES = ["cs", "vi"]
EVALUATION_RUN_CONFIG = {
    **QUIET_RUN_CONFIG,
    "ops": {"evaluation_scores": {"config": {"max_new_tokens": 8, "bootstrap_resamples": 200}}},
}
TRAINING = {
    "method": "full",
    "max_steps": 10,
    "log_every": 5,
    "save_every": 5,
    "retrain_min_new_rows": 1,
    "retrain_cooldown_seconds": 0,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Loop:
    """The instance, definitions and sensor cursors of one simulated deployment."""

    def __init__(self, root, training: dict) -> None:
        self.lake_root, home = root / "lake", root / "home"
        home.mkdir()
        port = free_port()
        build_demo_corpus(self.lake_root, f"http://127.0.0.1:{port}", CODES)
        ensure_demo_site_server(self.lake_root / "demo" / "site", port)
        build_tiny_models(self.lake_root / "models" / "tiny", demo_texts(CODES))
        self.resources = demo_resources(str(self.lake_root), port)
        self.resources["training"] = Training(**training)
        # Short generations keep the many runs of this test cheap; the lineage is what is under test here.
        self.resources["captioner"] = Captioner(max_new_tokens=8)
        self.resources["translator"] = Translator(enforce_output_language=False, max_new_tokens=12)
        self.defs = build_definitions(self.resources)
        self.instance = dg.DagsterInstance.local_temp(str(home))
        self.store = LakeStore(self.lake_root)
        self.cursors: dict[str, str | None] = {}
        self.automation_cursor = None
        assert self.automate() == {}  # the automation sensor is on from the start: nothing to do yet

    def tick(self, sensor) -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(sensor.name), resources=self.resources
        ) as context:
            result = sensor(context)
        self.cursors[sensor.name] = result.cursor
        return list(result.run_requests or [])

    def automate(self) -> dict[str, set[str | None]]:
        """One tick of the automation condition sensor: the evaluation assets it requests, by partition."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.automation_cursor
        )
        self.automation_cursor = result.cursor
        names = ("evaluation_scores", "evaluation_samples", "evaluation_report")
        requested = {name: set(result.get_requested_partitions(dg.AssetKey(name))) for name in names}
        assert result.total_requested == sum(len(partitions) for partitions in requested.values())  # nothing else
        return {name: partitions for name, partitions in requested.items() if partitions}

    def on_run(self, sensor, run: dg.DagsterRun) -> list[dg.RunRequest]:
        """Evaluate a run-status sensor on the status event of ``run`` from the instance's event log."""
        event_type = dg.DagsterEventType.RUN_SUCCESS if run.is_success else dg.DagsterEventType.RUN_FAILURE
        event = self.instance.all_logs(run.run_id, of_type=event_type)[0].dagster_event
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=event,
            dagster_instance=self.instance,
            dagster_run=run,
            resources=self.resources,
        )
        with context.for_run_failure() if run.is_failure else context as entered:
            output = sensor(entered)
        if output is None or isinstance(output, dg.SkipReason):
            return []
        return [output] if isinstance(output, dg.RunRequest) else list(output)

    def run_phases(self, request: dg.RunRequest) -> list[str]:
        """A landing request's sources run, then every run ``language_phases_sensor`` asks for after each run, until
        it asks for none; returns the runs' job and partition in order."""
        pending, done = [("sources_job", request)], []
        while pending:
            job_name, next_request = pending.pop(0)
            result = self.execute(job_name, next_request)
            assert result.success, f"{job_name}[{next_request.partition_key}] failed"
            done.append(f"{job_name}[{next_request.partition_key}]")
            pending += [(r.job_name, r) for r in self.on_run(language_phases_sensor, result.dagster_run)]
        return done

    def execute(self, job_name: str, request: dg.RunRequest, raise_on_error: bool = True):
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            run_config=EVALUATION_RUN_CONFIG if job_name == "evaluation_job" else QUIET_RUN_CONFIG,
            raise_on_error=raise_on_error,
        )

    def train_rows(self) -> dict[str, int]:
        records = self.store.read_table_all_languages("mella_dataset")
        return {code: int(((records["language"] == code) & (records["split"] == "train")).sum()) for code in CODES}

    def train_then_evaluate(self) -> list[dg.RunRequest]:
        """Retraining tick → training run → evaluation runs → report; returns the evaluation requests."""
        (request,) = self.tick(retraining_sensor)
        self.execute("training_job", request)
        requested = self.automate()
        assert requested == {"evaluation_scores": set(CODES), "evaluation_samples": set(CODES)}
        evaluations = [dg.RunRequest(partition_key=code) for code in sorted(requested["evaluation_scores"])]
        reports = []
        for evaluation in evaluations:
            assert self.execute("evaluation_job", evaluation).success
            reports.append(self.automate())
        assert reports[:-1] == [{}] * (len(reports) - 1) and reports[-1] == {"evaluation_report": {None}}, (
            "the report is requested once, after the last language is evaluated"
        )
        self.execute("report_job", dg.RunRequest())
        assert self.automate() == {}
        return evaluations


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    deployment = Loop(tmp_path_factory.mktemp("loop"), TRAINING)
    # Hold back one WARC file of Czech: it "lands" later and makes the dataset grow.
    held = deployment.store.path("landing/cs/demo-cs-01.warc.gz")
    stash = deployment.lake_root.parent / "held-back.warc.gz"
    shutil.move(held, stash)
    deployment.held, deployment.stash = held, stash
    yield deployment
    deployment.instance.dispose()


def test_landing_sensor_to_evaluation_and_again_after_new_data(loop):
    # 1. The first WARCs are seen by the crawl sensor: one pipeline run per language.
    requests = loop.tick(crawl_landing_sensor)
    assert sorted(r.partition_key for r in requests) == CODES
    for request in requests:
        # sources → each shard → the language, each run requested by language_phases_sensor after the one before.
        code = request.partition_key
        assert loop.run_phases(request) == [
            f"sources_job[{code}]",
            *(f"shard_pipeline_job[{key}]" for key in page_partition_keys(code)),
            f"language_pipeline_job[{code}]",
        ]
    rows_before = loop.train_rows()
    assert all(rows > 0 for rows in rows_before.values())

    # 2. First checkpoint → evaluation of both languages (base vs fine-tuned; no previous yet) → report.
    evaluations = loop.train_then_evaluate()
    assert sorted(r.partition_key for r in evaluations) == CODES
    first = json.loads(loop.store.get_bytes("checkpoints/LATEST.json"))
    assert first["previous_checkpoint"] is None
    assert loop.tick(retraining_sensor) == []  # no growth since that checkpoint

    # 3. New data lands for Czech → one run → the Czech train split grows → retraining → a new checkpoint.
    shutil.move(loop.stash, loop.held)
    (request,) = loop.tick(crawl_landing_sensor)
    assert request.partition_key == "cs" and request.tags["mella/new_files"] == "1"
    assert loop.run_phases(request)[-1] == "language_pipeline_job[cs]"
    rows_after = loop.train_rows()
    assert rows_after["cs"] > rows_before["cs"] and rows_after["vi"] == rows_before["vi"]
    evaluations = loop.train_then_evaluate()
    assert sorted(r.partition_key for r in evaluations) == CODES
    second = json.loads(loop.store.get_bytes("checkpoints/LATEST.json"))
    assert second["checkpoint_key"] != first["checkpoint_key"]
    assert second["previous_checkpoint"]["checkpoint_key"] == first["checkpoint_key"]
    assert second["train_rows"] == sum(rows_after.values())

    # 4. Every language was scored for base, previous and current, with intervals and paired deltas.
    scores = loop.store.read_table_all_languages("evaluation_scores")
    assert set(scores["checkpoint_key"]) == {second["checkpoint_key"]}
    for code in CODES:
        mine = scores.filter(pl.col("language") == code)
        assert set(mine["model"]) == {"base", "previous", "finetuned"}
        current = mine.filter(pl.col("model") == "finetuned")
        assert set(current["compared_to"]) == {"previous"}
        kw = current.filter(pl.col("metric") == "keyword_accuracy").row(0, named=True)
        assert kw["ci_low"] <= kw["value"] <= kw["ci_high"]
    samples = loop.store.read_table_all_languages("evaluation_samples")
    assert set(samples["model"]) == {"base", "previous", "finetuned"}
    report = loop.instance.get_latest_materialization_event(dg.AssetKey("evaluation_report")).asset_materialization
    assert "| language | metric | base | previous | current | delta |" in report.metadata["report"].value
    check = loop.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("evaluation_report"), "evaluation_report_no_regression")]
    )
    assert check, "the regression check ran with the report"

    # 5. The training metadata came back through Pipes: loss going down, tokens/s, peak memory, config beside it.
    event = loop.instance.get_latest_materialization_event(dg.AssetKey("finetuned_checkpoint"))
    metadata = event.asset_materialization.metadata
    assert metadata["final_loss"].value < metadata["first_loss"].value
    assert metadata["tokens_per_s"].value > 0 and metadata["peak_memory_mb"].value > 0
    assert metadata["previous_checkpoint_key"].value == first["checkpoint_key"]
    config = json.loads(loop.store.get_bytes(f"{second['checkpoint_key']}/mella_checkpoint.json"))
    assert config["data_version"] == second["data_version"]
    assert sorted(config["partition_data_versions"]) == CODES


def test_a_killed_training_subprocess_resumes_from_its_last_saved_step(loop):
    # Other settings → another checkpoint id → a real training run, slow enough to be killed part-way.
    loop.resources["training"] = Training(**{**TRAINING, "max_steps": 24, "save_every": 2, "learning_rate": 5e-4})
    loop.defs = build_definitions(loop.resources)
    work_root = loop.lake_root / "work" / "training"
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=loop.execute("training_job", dg.RunRequest(), raise_on_error=False))
    )
    runner.start()
    deadline = time.monotonic() + 180
    killed_at = None
    while killed_at is None and time.monotonic() < deadline and runner.is_alive():
        for folder in work_root.glob("*") if work_root.exists() else []:
            info = resume_info(folder)
            if info and info["step"] >= 4 and (folder / PID_FILE).exists():
                os.kill(int((folder / PID_FILE).read_text()), signal.SIGKILL)
                killed_at = folder
                break
        time.sleep(0.02)
    runner.join(timeout=120)
    assert killed_at is not None, "the training never saved resume state"
    failed = outcome["result"]
    assert not failed.success
    saved_step = resume_info(killed_at)["step"]
    assert 4 <= saved_step < 24

    # The failure sensor tells what failed and where a rerun resumes.
    loop.on_run(training_failure_sensor, failed.dagster_run)

    rerun = loop.execute("training_job", dg.RunRequest())
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("finetuned_checkpoint")[0].metadata
    assert metadata["resumed_from_step"].value == saved_step
    assert metadata["steps"].value == 24
    assert not killed_at.exists(), "the work folder is removed once the checkpoint is in the lake"
