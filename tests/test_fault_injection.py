"""Fault injection (issue #8): for one language, every stage of the pipeline killed (SIGKILL) at a random lake write,
an image host that drops, stalls and fails, an S3 endpoint that goes away mid-stage, and a disk that fills up. After
each fault a rerun must leave the lake exactly as an uninterrupted run left it: the same rows in every table (row
hashes, varying columns listed in ``faults.VARYING_COLUMNS``), the same blobs, no duplicate rows, no temporary file
left over or read by the catalog. A stalled stage fails at its deadline with a message that says so.

The random points come from ``MELLA_FAULT_SEED`` (default below) and are printed with each cell (``pytest -s``).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import free_port

from mella_assets.lib.catalog import open_catalog
from mella_assets.lib.lake import LakeStore
from support import faults
from support.faults import (
    DROP,
    ERROR_503,
    STAGES,
    STALL,
    FaultySite,
    TcpOutage,
    duplicated_tables,
    lake_state,
    location_roots,
    materialize_pipeline,
    materialize_stage,
    rename_trap,
    run_failure_message,
    stage_resources,
    state_differences,
    temp_files,
)

pytestmark = pytest.mark.slow
LANGUAGE = "hu"
SEED = int(os.environ.get("MELLA_FAULT_SEED", "20261126"))
REPO = Path(__file__).resolve().parent.parent
CHILD_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MELLA_RETRY_MAX_RETRIES": "0",  # a fault must fail its stage at once, not after the retry policy's waits
}
SKIP_INPUTS = shutil.ignore_patterns("demo")  # the site is served from the reference lake's own folder


@dataclass
class Reference:
    """The uninterrupted run: ``states/<i>`` is the lake before stage i (``states/9``: after the last)."""

    lake: Path
    states: Path
    site: FaultySite
    site_dir: Path
    port: int
    events: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    digests: list[dict] = field(default_factory=list)

    def before(self, stage: str) -> Path:
        return self.states / str(STAGES.index(stage))

    def after(self, stage: str) -> Path:
        return self.states / str(STAGES.index(stage) + 1)

    def digest_before(self, stage: str) -> dict:
        return self.digests[STAGES.index(stage)]

    def digest_after(self, stage: str) -> dict:
        return self.digests[STAGES.index(stage) + 1]

    def copy(self, stage: str, target: Path) -> Path:
        """A fresh lake in the state just before ``stage``."""
        shutil.copytree(self.before(stage), target)
        return target

    def state(self, lake: Path, *extra_roots: str) -> dict:
        """A lake's digest, its own location and the reference lake's (copied tables name it) normalised."""
        return lake_state(lake, (*extra_roots, *location_roots(lake), *location_roots(self.lake)))

    def resources(self, lake: Path | str, **fetcher: object) -> dict:
        return stage_resources(lake, self.port, self.site_dir, **fetcher)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    from mella_assets.demo.corpus import build_demo_corpus, demo_texts
    from mella_assets.demo.tiny_models import build_tiny_models

    root = tmp_path_factory.mktemp("fault-reference")
    lake, port = root / "lake", free_port()
    build_demo_corpus(lake, f"http://127.0.0.1:{port}", [LANGUAGE])
    build_tiny_models(lake / "models" / "tiny", demo_texts([LANGUAGE]))
    site_dir = lake / "demo" / "site"
    with FaultySite(site_dir, port) as site:
        ref = Reference(lake=lake, states=root / "states", site=site, site_dir=site_dir, port=port)
        resources = ref.resources(lake)
        for index, stage in enumerate(STAGES):
            shutil.copytree(lake, ref.states / str(index), ignore=SKIP_INPUTS)
            ref.digests.append(ref.state(lake))
            started = time.monotonic()
            with rename_trap() as trap:
                result = materialize_stage(stage, LANGUAGE, resources)
            assert result.success, run_failure_message(result)
            ref.events[stage], ref.seconds[stage] = trap.events, time.monotonic() - started
        shutil.copytree(lake, ref.states / str(len(STAGES)), ignore=SKIP_INPUTS)
        ref.digests.append(ref.state(lake))
        print(f"\nreference ({LANGUAGE}, seed {SEED}): " + ", ".join(f"{s} {ref.seconds[s]:.1f} s" for s in STAGES))
        yield ref


def assert_readable_and_atomic(ref: Reference, lake: Path, stage: str, *extra_roots: str) -> None:
    """After a crash or failure inside ``stage``: every file is the old or the new version, never a part; every
    table reads; the catalog sees exactly the tables' rows (no temporary file read as data)."""
    state = ref.state(lake, *extra_roots)  # reads every Parquet file: a torn one would raise here
    before, after = ref.digest_before(stage), ref.digest_after(stage)
    torn = [key for key, digest in state.items() if digest not in (before.get(key), after.get(key))]
    assert torn == [], f"{stage}: files that are neither the old nor the new version: {torn}"
    store = LakeStore(lake)
    assert not [name for name in store.tables() if name.startswith(".")]
    with open_catalog(store) as catalog:
        for name in store.tables():
            expected = sum(d["rows"] for key, d in state.items() if key.startswith(f"tables/{name}/"))
            assert catalog.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] == expected, name


def assert_same_as_reference(ref: Reference, lake: Path, stage: str, *extra_roots: str) -> None:
    state = ref.state(lake, *extra_roots)
    assert state_differences(state, ref.digest_after(stage)) == []
    assert duplicated_tables(state) == []
    assert temp_files(lake) == []


# -- SIGKILL at a random write of each stage -------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_killed_at_a_random_write_reruns_to_the_uninterrupted_result(reference, stage, tmp_path):
    kill_at = random.Random(f"{SEED}-kill-{stage}").randrange(reference.events[stage])
    lake = reference.copy(stage, tmp_path / "lake")
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "support.faults", "stage", "--lake", str(lake), "--language", LANGUAGE,
         "--site-port", str(reference.port), "--site-dir", str(reference.site_dir), "--stage", stage,
         "--kill-at", str(kill_at)],
        cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    killed_seconds = time.monotonic() - started
    where = f"seed {SEED}: {stage} killed at rename event {kill_at} of {reference.events[stage]}"
    assert child.returncode == -signal.SIGKILL, (
        f"{where}: the child was not killed\n{child.stdout}{child.stderr[-3000:]}"
    )
    assert_readable_and_atomic(reference, lake, stage)
    left_behind = temp_files(lake)
    assert bool(left_behind) == (kill_at % 2 == 0), f"{where}: temporary files {left_behind}"

    started = time.monotonic()
    result = materialize_stage(stage, LANGUAGE, reference.resources(lake))
    assert result.success, f"{where}: {run_failure_message(result)}"
    assert_same_as_reference(reference, lake, stage)
    print(f"\n{where}: identical after rerun (child {killed_seconds:.1f} s, rerun {time.monotonic() - started:.1f} s)")


def test_the_whole_job_killed_at_a_random_moment_reruns_to_the_uninterrupted_result(reference, tmp_path):
    """An outside SIGKILL of the run process at a random time inside a random stage (found by its log line)."""
    rng = random.Random(f"{SEED}-job")
    # A stage long enough to be hit, with stages after it (the run must still be going when the kill lands).
    target = rng.choice([s for s in STAGES[:-2] if reference.seconds[s] > 0.2])
    delay = rng.uniform(0.0, 0.8) * reference.seconds[target]
    lake = reference.copy(STAGES[0], tmp_path / "lake")
    process = subprocess.Popen(
        [sys.executable, "-m", "support.faults", "pipeline", "--lake", str(lake), "--language", LANGUAGE,
         "--site-port", str(reference.port), "--site-dir", str(reference.site_dir)],
        cwd=REPO, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    running: list[str] = []
    marker = threading.Event()

    def follow() -> None:
        for line in process.stderr:
            if "STEP_START" in line:
                running.append(line.rsplit('"', 2)[-2])
                if running[-1] == target:
                    marker.set()

    threading.Thread(target=follow, daemon=True).start()
    assert marker.wait(timeout=300), f"seed {SEED}: {target} never started (saw {running})"
    time.sleep(delay)
    assert process.poll() is None, f"seed {SEED}: the run ended before the kill ({delay:.2f} s after {target})"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    where = f"seed {SEED}: job killed {delay:.2f} s after {target} started (last step started: {running[-1]})"

    result = materialize_pipeline(LANGUAGE, reference.resources(lake))
    assert result.success, f"{where}: {run_failure_message(result)}"
    assert_same_as_reference(reference, lake, STAGES[-1])
    print(f"\n{where}: identical after rerun")


# -- the image host misbehaves ---------------------------------------------------------------------------------------


def image_paths(ref: Reference) -> list[str]:
    """Paths of the images the reference run stored (so every fault has a known healthy outcome)."""
    kept = LakeStore(ref.after("images")).read_table("images", LANGUAGE)  # every shard of the language
    return sorted({urlsplit(url).path for url in kept["image_url"]})


def test_image_host_that_drops_stalls_and_fails_is_bounded_retried_and_healed_by_a_rerun(reference, tmp_path):
    paths = image_paths(reference)
    rng = random.Random(f"{SEED}-http")
    rng.shuffle(paths)
    quarter = max(1, len(paths) // 5)
    plan = {
        "dropped": paths[:quarter],
        "stalled": paths[quarter : 2 * quarter],
        "transient_503": paths[2 * quarter : 3 * quarter],  # one 503, then the image: retried within the run
        "persistent_503": paths[3 * quarter : 4 * quarter],  # more 503s than retries: rejected, retried next run
    }
    actions = {"dropped": [DROP], "stalled": [STALL], "transient_503": [ERROR_503], "persistent_503": [ERROR_503] * 3}
    lake = reference.copy("images", tmp_path / "lake")
    site = reference.site
    # A stall well past the request timeout, and a timeout with room for a loaded CI machine (1 s was flaky there).
    site.stall_s = 6.0
    site.faults = {path: list(actions[kind]) for kind, chosen in plan.items() for path in chosen}
    started = time.monotonic()
    try:
        result = materialize_stage(
            "images", LANGUAGE, reference.resources(lake, timeout_s=2.5, max_retries=2, backoff_s=0.05)
        )
    finally:
        site.clear()
    seconds = time.monotonic() - started
    assert result.success, run_failure_message(result)
    assert seconds < 30, f"the faulty host held the stage for {seconds:.1f} s"
    rejects = LakeStore(lake).read_table("image_rejects", LANGUAGE)
    reason = {urlsplit(url).path: r for url, r in zip(rejects["image_url"], rejects["reason"], strict=True)}
    assert {reason.get(p) for p in plan["dropped"]} == {"connection_error"}
    assert {reason.get(p) for p in plan["stalled"]} == {"timeout"}
    assert {reason.get(p) for p in plan["persistent_503"]} == {"http_error_503"}
    assert {reason.get(p) for p in plan["transient_503"]} == {None}  # retried and kept

    result = materialize_stage("images", LANGUAGE, reference.resources(lake))
    assert result.success, run_failure_message(result)
    assert_same_as_reference(reference, lake, "images")
    print(
        f"\nseed {SEED}: image host faults { ({k: len(v) for k, v in plan.items()}) }: {seconds:.1f} s, healed by rerun"
    )


# -- the S3 endpoint goes away ---------------------------------------------------------------------------------------


def test_s3_endpoint_that_goes_away_mid_stage_fails_it_clearly_and_a_rerun_matches(reference, tmp_path, monkeypatch):
    from support.s3 import MotoServer

    before, after = reference.digest_before("images"), reference.digest_after("images")
    new_objects = sorted(set(after) - set(before))
    down_after = random.Random(f"{SEED}-s3").randint(1, len(new_objects))
    with MotoServer() as moto, TcpOutage(moto.port) as endpoint:
        for name, value in {**moto.env, "AWS_ENDPOINT_URL": endpoint.endpoint}.items():
            monkeypatch.setenv(name, value)
        # Few attempts and short timeouts, so the outage fails the stage within seconds.
        monkeypatch.setenv("MELLA_S3_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("MELLA_S3_CONNECT_TIMEOUT_S", "2")
        monkeypatch.setenv("MELLA_S3_READ_TIMEOUT_S", "5")
        monkeypatch.setenv("MELLA_RETRY_MAX_RETRIES", "0")  # the stage's own failure, not the policy's retries
        moto.create_bucket("mella")
        lake = LakeStore("s3://mella/lake", cache_dir=tmp_path / "s3-cache")
        for key, path in faults.lake_files(reference.before("images")):
            if not key.startswith(("models/", "demo/")):
                lake.put_bytes(key, path.read_bytes())
        endpoint.puts, endpoint.down_after_puts = 0, down_after
        started = time.monotonic()
        failed = materialize_stage("images", LANGUAGE, reference.resources(lake.root_uri))
        failed_seconds = time.monotonic() - started
        assert not endpoint.is_up, "the outage never happened"
        assert not failed.success
        message = run_failure_message(failed)
        assert "Could not connect to the endpoint URL" in message and endpoint.endpoint in message, message
        assert failed_seconds < 60

        endpoint.up()  # the endpoint is back, on the same address, with its data
        result = materialize_stage("images", LANGUAGE, reference.resources(lake.root_uri))
        assert result.success, run_failure_message(result)
        copy = tmp_path / "s3-copy"
        for key in (key for prefix in ("cache", "images", "landing", "tables") for key in lake.list(prefix)):
            target = copy / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lake.get_bytes(key))
    assert_same_as_reference(reference, copy, "images", lake.root_uri)
    print(
        f"\nseed {SEED}: S3 down at PUT {down_after} of {len(new_objects)}: failed in {failed_seconds:.1f} s, rerun ok"
    )


# -- the disk fills up -----------------------------------------------------------------------------------------------


def can_mount_tmpfs() -> bool:
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
        capture_output=True,
    )  # fmt: skip
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="no user and mount namespace here for a real tmpfs (unshare -rm)")
def test_a_full_disk_fails_each_stage_keeps_earlier_tables_and_a_rerun_with_room_matches(reference, tmp_path):
    out = tmp_path / "out"
    mounted = location_roots(tmp_path / "mnt" / "lake")  # where the stages ran (copied out afterwards)
    started = time.monotonic()
    child = subprocess.run(
        ["unshare", "-rm", sys.executable, "-m", "support.faults", "disk-full",
         "--lake", str(tmp_path / "mnt"), "--language", LANGUAGE, "--site-port", str(reference.port),
         "--site-dir", str(reference.site_dir), "--stages", ",".join(STAGES), "--states", str(reference.states),
         "--out", str(out)],
        cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    cells = json.loads(child.stdout.strip().splitlines()[-1])
    assert [cell["stage"] for cell in cells] == list(STAGES)
    for cell in cells:
        stage = cell["stage"]
        assert not cell["full_success"], f"{stage} did not run out of space: {cell}"
        assert "No space left on device" in cell["full_error"], cell["full_error"]
        assert_readable_and_atomic(reference, out / f"{stage}-full", stage, *mounted)
        assert cell["rerun_success"], cell["rerun_error"]
        assert_same_as_reference(reference, out / f"{stage}-rerun", stage, *mounted)
    print(f"\ndisk full, every stage: {time.monotonic() - started:.1f} s; " + ", ".join(
        f"{c['stage']} {c['free_bytes']}/{c['written_bytes']} B free" for c in cells))  # fmt: skip


# -- watchdog --------------------------------------------------------------------------------------------------------


def test_a_stalled_image_host_ends_the_stage_at_its_deadline_with_retryable_rejects(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_IMAGES", "2")
    lake = reference.copy("images", tmp_path / "lake")
    site = reference.site
    site.stall_s = 20.0
    site.faults = {path: [STALL] for path in image_paths(reference)}
    started = time.monotonic()
    try:
        # A per-request timeout far beyond the stage deadline: only the deadline can end this.
        result = materialize_stage("images", LANGUAGE, reference.resources(lake, timeout_s=60.0, max_retries=0))
    finally:
        site.clear()
    seconds = time.monotonic() - started
    # The deadline costs the unfinished records, not the partition (issue #16): they are retryable rejects.
    assert result.success
    rejects = LakeStore(lake).read_table("image_rejects", LANGUAGE)
    assert set(rejects["reason"]) == {"stage_deadline"}, rejects
    assert "(MELLA_STAGE_TIMEOUT_S_IMAGES=2)" in rejects["detail"][0]
    assert seconds < 10, f"the stage took {seconds:.1f} s to end"


def ref_state_unchanged(ref: Reference, lake: Path, stage: str) -> bool:
    return state_differences(ref.state(lake), ref.digest_before(stage)) == []


def test_the_stage_list_follows_the_language_pipeline_job() -> None:
    from mella_assets.definitions import language_pipeline_assets

    # The harness names the stages itself (its child processes import it without Dagster's asset graph).
    assert tuple(asset.node_def.name for asset in language_pipeline_assets()) == STAGES
