"""`mella demo`: build the demo corpus and tiny models, materialize every asset for every language, summarise.

Each run is created for the demo code location's job in the Dagster instance in ``DAGSTER_HOME`` (default
``.mella/dagster_home``) and executed in this process, so `make ui` lists it under its job, on the timeline, and
re-executes it. (Dagster has no public call that creates a run for a code location's job: :func:`create_location_run`
makes the calls `dagster job launch` makes, :func:`execute_location_run` those of the run worker it launches.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

import polars as pl

from mella_assets.demo.cc_crawl import DEMO_CC_FOLDER, DEMO_CRAWL
from mella_assets.settings import Settings

DEFAULT_DAGSTER_HOME = ".mella/dagster_home"
DEFAULT_SITE_PORT = Settings().demo_site_port
# The local instance: SQLite storage in DAGSTER_HOME; `dagster dev` (make ui) runs the daemon that starts queued
# runs and evaluates sensors. Its run queue and pools keep switched-on sensors and backfills from starting every
# run at once on a laptop; each section is added to an existing dagster.yaml only where the user set none of it.
INSTANCE_SECTIONS = {
    "concurrency": """\
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: "mella/pool"
        value: "training"
        limit: 1
  pools:
    # The model-loading steps (pool `gpu`): one at a time, as on one GPU (deploy/dagster.yaml).
    default_limit: 1
    granularity: op
""",
    "telemetry": "telemetry:\n  enabled: false\n",
    # Dagster's first-visit pop-up would cover the UI on every fresh browser.
    "nux": "nux:\n  enabled: false\n",
}
# Run limits set here conflict with `concurrency` (Dagster refuses both).
RUN_LIMIT_SECTIONS = {"concurrency": ("run_queue", "run_coordinator")}
DEMO_CODE_LOCATION = "mella_assets.demo.definitions"
PRODUCTION_CODE_LOCATION = "mella_assets.definitions"
# The code locations' names in the UI (`mella ui` writes them into its workspace.yaml; pyproject's
# `[tool.dagster]` and deploy/workspace.yaml name the production one too). A demo run's origin must carry the demo
# location's name for the UI to list and re-execute it.
PRODUCTION_LOCATION_NAME = "mella"
DEMO_LOCATION_NAME = "mella-demo"
DEMO_RUN_TAGS = {"mella/trigger": "demo"}
# The demo prints one line per run; the full event log is in the UI.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

SUMMARY_SQL = """
WITH
  pages AS (SELECT language, count(*) AS pages, sum(len(images)) AS candidate_images FROM raw_crawl GROUP BY 1),
  know AS (SELECT language, count(*) AS d_know FROM d_know GROUP BY 1),
  ling AS (SELECT language, count(*) AS d_ling FROM d_ling GROUP BY 1),
  split AS (SELECT language, count(*) FILTER (split = 'train') AS train,
                   count(*) FILTER (split = 'test') AS test FROM mella_dataset GROUP BY 1),
  scores AS (SELECT language,
      max(value) FILTER (metric = 'keyword_accuracy' AND model = 'base') AS kw_acc_base,
      max(value) FILTER (metric = 'keyword_accuracy' AND model = 'finetuned') AS kw_acc_tuned,
      max(value) FILTER (metric = 'meteor' AND model = 'base') AS meteor_base,
      max(value) FILTER (metric = 'meteor' AND model = 'finetuned') AS meteor_tuned
    FROM evaluation_scores GROUP BY 1)
SELECT pages.language, pages, candidate_images, d_know, d_ling, train, test,
       round(kw_acc_base, 3) AS kw_acc_base, round(kw_acc_tuned, 3) AS kw_acc_tuned,
       round(meteor_base, 3) AS meteor_base, round(meteor_tuned, 3) AS meteor_tuned
FROM pages LEFT JOIN know USING (language) LEFT JOIN ling USING (language) LEFT JOIN split USING (language)
     LEFT JOIN scores USING (language)
ORDER BY language
"""


def configure_demo_environment(lake_root: str, dagster_home: str, port: int) -> None:
    """Environment the demo's resources read (set before the code location is imported)."""
    os.environ["MELLA_LAKE"] = str(Path(lake_root).resolve())
    os.environ["DAGSTER_HOME"] = str(Path(dagster_home).resolve())
    os.environ["MELLA_DEMO_SITE_PORT"] = str(port)
    # The demo's own Common Crawl (demo/cc_crawl.py): its index and WARC files, read from the lake folder by range.
    os.environ["MELLA_CC_INDEX"] = os.environ["MELLA_CC_WARC_BASE"] = str(Path(lake_root).resolve() / DEMO_CC_FOLDER)
    # A LoRA adapter on a 0.2 M-parameter random model barely moves its loss (measured: 7.7 → 7.2 in 200 steps);
    # full fine-tuning of the tiny model shows the loop working (7.4 → 1.2). Real checkpoints default to LoRA.
    os.environ.setdefault("MELLA_TRAINING_METHOD", "full")
    os.environ.setdefault("MELLA_TRAINING_STEPS", "200")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also silences transformers' bars (and Pipes')
    _write_instance_config(dagster_home)


def configure_ui_environment(lake_root: str, dagster_home: str, port: int) -> str:
    """Environment for `mella ui` / `make ui`; returns the code location module to serve.

    The demo's location (its loopback site and fetcher, the tiny models' training defaults) only for a demo lake;
    any other lake gets the production location, whose fetcher keeps the SSRF guard on: pointing the UI at a real
    lake must not open private addresses to the pages it crawls."""
    from mella_assets.demo.site import is_demo_lake

    if is_demo_lake(lake_root):
        configure_demo_environment(lake_root, dagster_home, port)
        return DEMO_CODE_LOCATION
    os.environ["MELLA_LAKE"] = lake_root if "://" in lake_root else str(Path(lake_root).resolve())
    os.environ["DAGSTER_HOME"] = str(Path(dagster_home).resolve())
    _write_instance_config(dagster_home)
    return PRODUCTION_CODE_LOCATION


def _write_instance_config(dagster_home: str) -> list[str]:
    """Writes the local instance's dagster.yaml, or appends to an existing one the sections of
    :data:`INSTANCE_SECTIONS` it lacks (the user's text and values are kept); returns the sections added."""
    import yaml

    path = Path(dagster_home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    present = set(yaml.safe_load(text) or {}) if text.strip() else set()
    added = [
        key
        for key in INSTANCE_SECTIONS
        if key not in present and not present.intersection(RUN_LIMIT_SECTIONS.get(key, ()))
    ]
    if added:
        header = "" if not text else ("\n" if text.endswith("\n") else "\n\n") + "# added by mella (local defaults)\n"
        path.write_text(text + header + "".join(INSTANCE_SECTIONS[key] for key in added))
    return added


def prepare_demo_inputs(lake_root: str, languages: list[str], port: int) -> dict[str, float]:
    """Demo web site + landing WARCs + tiny models in the lake; returns seconds per step."""
    from mella_assets.demo.cc_crawl import build_demo_crawl
    from mella_assets.demo.corpus import build_demo_corpus, demo_texts
    from mella_assets.demo.site import ensure_demo_site_server
    from mella_assets.demo.tiny_models import build_tiny_models
    from mella_assets.lib.lake import LakeStore

    store = LakeStore(lake_root)
    timings = {}
    started = time.perf_counter()
    build_demo_corpus(store.root, f"http://127.0.0.1:{port}", languages)
    build_demo_crawl(store.root, languages)
    ensure_demo_site_server(store.path("demo/site"), port)
    timings["corpus_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    build_tiny_models(store.path("models/tiny"), demo_texts(languages))
    timings["tiny_models_seconds"] = time.perf_counter() - started
    return timings


# The demo crawl's selection, a language's three phases (sources, its language × shard runs, the language run),
# then training and evaluation.
DEMO_JOBS = (
    "selection_job",
    "sources_job",
    "shard_pipeline_job",
    "language_pipeline_job",
    "training_job",
    "evaluation_job",
    "report_job",
)
LANGUAGE_JOBS = DEMO_JOBS[1:4]


def materialize_everything(
    languages: list[str],
    defs=None,
    instance=None,
    log=print,
    jobs: tuple[str, ...] = DEMO_JOBS,
    crawls: tuple[str, ...] = (),
) -> dict[str, float]:
    """Every asset, every language: each run created for the demo code location's job (the same job, snapshot
    and origin as a run launched from the UI, tagged ``mella/trigger=demo``) and executed in this process; returns
    the seconds each run took. ``defs``: definitions built by a caller (tests with their own resources), executed
    in process without a code location. ``crawls``: Common Crawl crawls registered (``crawls`` partitions) and
    selected first (none: no selection run)."""
    import dagster as dg

    from mella_assets.partitions import CRAWL_PARTITIONS

    instance = instance or dg.DagsterInstance.get()
    if crawls:
        instance.add_dynamic_partitions(CRAWL_PARTITIONS.name, list(crawls))
    seconds = {}
    with contextlib.ExitStack() as stack:
        if defs is None:
            location = stack.enter_context(demo_code_location(instance))
            run_job = functools.partial(_execute_location_run, instance, location)
        else:
            run_job = functools.partial(_execute_in_process, instance, defs)
        for job_name, partitions in _stages(languages, jobs, crawls):
            for partition in partitions:
                label = f"{job_name}[{partition}]" if partition else job_name
                log(f"  {label} ...")
                started = time.perf_counter()
                success = run_job(job_name, partition, log)
                status = "ok" if success else "FAILED"
                seconds[label] = time.perf_counter() - started
                log(f"  {label:<32} {status:>6}  {seconds[label]:6.1f} s")
                if not success:
                    raise RuntimeError(f"{label} failed; open the run in the UI (make ui) for the error")
    return seconds


def _stages(
    languages: list[str], jobs: tuple[str, ...], crawls: tuple[str, ...] = ()
) -> list[tuple[str, list[str | None]]]:
    from mella_assets.jobs import LANGUAGE_PHASES, phase_partition_keys

    sharded = {name for name, is_sharded in LANGUAGE_PHASES if is_sharded}
    partitioned = {name for name, _ in LANGUAGE_PHASES} | {"evaluation_job"}

    def partitions(name: str) -> list[str | None]:
        if name == "selection_job":
            return list(crawls)
        if name in sharded:
            return [key for code in languages for key in phase_partition_keys(True, code)]
        return list(languages) if name in partitioned else [None]

    stages = [(name, partitions(name)) for name in DEMO_JOBS if name in jobs]
    return [(name, keys) for name, keys in stages if keys]


@contextlib.contextmanager
def demo_code_location(instance, module: str = DEMO_CODE_LOCATION, location_name: str = DEMO_LOCATION_NAME):
    """The demo's code location loaded in this process, under the name the UI's workspace gives it."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=module, working_directory=os.getcwd()),
        location_name=location_name,
    )
    with origin.create_location(instance) as location:
        yield location


def create_location_run(instance, location, job_name: str, partition: str | None, tags: dict[str, str] | None = None):
    """A run of ``job_name`` as `dagster job launch` creates it: the code location's job snapshot, execution plan
    and origins, so the UI lists it under the job, puts it on the timeline and re-executes it without a version
    warning. The caller executes it (:func:`execute_location_run`) or submits it to the instance."""
    repository = next(iter(location.get_repositories().values()))
    remote_job = repository.get_full_job(job_name)
    plan = location.get_execution_plan(
        remote_job, QUIET_RUN_CONFIG, step_keys_to_execute=None, known_state=None, instance=instance
    ).execution_plan_snapshot
    run_tags = {**remote_job.tags, **DEMO_RUN_TAGS, **(tags or {})}
    if partition:
        run_tags["dagster/partition"] = partition
    return instance.create_run(
        job_name=job_name,
        run_id=None,
        run_config=QUIET_RUN_CONFIG,
        resolved_op_selection=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags=run_tags,
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=None,
        asset_check_selection=None,
        asset_graph=repository.asset_graph,
    )


def execute_location_run(instance, run, log=print) -> bool:
    """Execute a created run in this process (what the run worker of a launched run does), printing each step's
    start and finish and the trainer's progress; whether it succeeded."""
    from dagster._core.execution.api import execute_run_iterator
    from dagster._utils.hosted_user_process import recon_job_from_origin

    with RunLogTail(instance, run.run_id, log):
        for _event in execute_run_iterator(recon_job_from_origin(run.job_code_origin), run, instance):
            pass
    return instance.get_run_by_id(run.run_id).is_success


def _execute_location_run(instance, location, job_name: str, partition: str | None, log) -> bool:
    return execute_location_run(instance, create_location_run(instance, location, job_name, partition), log)


def _execute_in_process(instance, defs, job_name: str, partition: str | None, log) -> bool:
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False, run_config=QUIET_RUN_CONFIG
    )
    return result.success


class RunLogTail:
    """Follows a run's event log from a thread and prints a line per finished step (and one when a step has run
    for a few seconds, so a long one is not silent), the checks' outcome, and a throttled line of the trainer's
    progress (its Pipes log messages)."""

    def __init__(
        self, instance, run_id: str, log=print, poll_s: float = 0.5, announce_after_s: float = 2.0,
        progress_every_steps: int = 25,
    ):  # fmt: skip
        self.instance, self.run_id, self.log = instance, run_id, log
        self.poll_s, self.announce_after_s = poll_s, announce_after_s
        self.progress_every_steps = progress_every_steps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"tail-{run_id[:8]}", daemon=True)
        self._cursor: str | None = None
        self._running: dict[str, float] = {}  # step → start time, until it is announced or finishes
        self._step_started: dict[str, float] = {}
        self._steps_done: set[str] = set()
        self.checks_passed = 0

    def __enter__(self) -> RunLogTail:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()  # whatever arrived after the last poll
        if self.checks_passed:
            self.log(f"    {self.checks_passed} checks passed")

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()
            for step, started in list(self._running.items()):
                if time.time() - started >= self.announce_after_s:
                    del self._running[step]
                    self.log(f"    {step:<26} running")

    def _drain(self) -> None:
        while True:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, limit=500)
            for record in connection.records:
                line = self._line(record.event_log_entry)
                if line:
                    self.log(line)
            self._cursor = connection.cursor
            if not connection.has_more:
                return

    def _line(self, entry) -> str | None:
        event = entry.dagster_event
        if event is None:
            return self._progress_line(entry.user_message)
        step, kind = event.step_key, event.event_type_value
        if step is None:  # run-level events: the caller prints the run's own line
            return None
        if kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.passed:
                self.checks_passed += 1
                return None
            return f"    check {data.asset_check_key.name} did not pass ({data.severity.value})"
        # A check's step is named after its asset's step: its outcome is counted, not printed.
        is_check = any(step.startswith(f"{done}_") for done in self._steps_done)
        if kind == "STEP_START":
            self._step_started[step] = entry.timestamp
            if not is_check:
                self._running[step] = entry.timestamp
            return None
        if kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self._steps_done.add(step)
            self._running.pop(step, None)
            if is_check and kind == "STEP_SUCCESS":
                return None
            took = entry.timestamp - self._step_started.get(step, entry.timestamp)
            return f"    {step:<26} {took:5.1f} s" + ("" if kind == "STEP_SUCCESS" else "  FAILED")
        return None

    def _progress_line(self, message: str) -> str | None:
        if not message.startswith('{"event": "progress"'):
            return None
        entry = json.loads(message)
        # Pipes delivers the trainer's messages in batches: thin them by step, not by arrival time.
        if entry["step"] % self.progress_every_steps:
            return None
        return f"      training step {entry['step']}: loss {entry['loss']:.3f}, {entry['tokens_per_s']:.0f} tokens/s"


SCORE_COLUMNS = ("kw_acc_base", "kw_acc_tuned", "meteor_base", "meteor_tuned")


def identical_scores_note(summary: pl.DataFrame) -> str | None:
    """One line under the summary when a score reads the same in every language (it looks broken otherwise)."""
    if summary.height < 2:
        return None
    same = [c for c in SCORE_COLUMNS if c in summary.columns and summary[c].n_unique() == 1]
    if not same:
        return None
    values = ", ".join(f"{column} = {summary[column][0]}" for column in same)
    return (
        f"Same in every language ({values}): the tiny random models, briefly trained, write nearly one answer for "
        "every image, with no keyword or word of the reference; real checkpoints score each language apart."
    )


def demo_summary(lake) -> pl.DataFrame:
    """The per-language summary the demo prints, from a lake (a LakeStore, a folder or an s3:// URI)."""
    from mella_assets.lib.catalog import run_sql
    from mella_assets.lib.lake import LakeStore

    return run_sql(lake if isinstance(lake, LakeStore) else LakeStore(lake), SUMMARY_SQL)


def quiet_libraries() -> None:
    """Keep the demo's output to its own lines: no preview warnings, no model-loading progress bars."""
    import warnings

    import dagster as dg
    import transformers

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_demo(lake_root: str, dagster_home: str, languages: list[str] | None, port: int) -> pl.DataFrame:
    configure_demo_environment(lake_root, dagster_home, port)
    quiet_libraries()
    from mella_assets.languages import LANGUAGES

    codes = languages or list(LANGUAGES)
    started = time.perf_counter()
    print(f"MELLA demo: {len(codes)} languages ({', '.join(codes)}), lake {os.environ['MELLA_LAKE']}")
    timings = prepare_demo_inputs(lake_root, codes, port)
    print(
        f"  demo corpus and site {timings['corpus_seconds']:.1f} s, tiny models {timings['tiny_models_seconds']:.1f} s"
    )
    materialize_everything(codes, crawls=(DEMO_CRAWL,))
    summary = demo_summary(lake_root)
    with pl.Config(
        tbl_rows=100, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(summary)
    note = identical_scores_note(summary)
    if note:
        print(note)
    print(
        f"Done in {time.perf_counter() - started:.0f} s. The tiny models are random: their text is gibberish by design."
    )
    print("Browse the runs and assets: make ui  (then open http://127.0.0.1:3000)")
    print('Query the lake: .venv/bin/mella sql "SELECT language, count(*) FROM d_know GROUP BY 1"')
    return summary
