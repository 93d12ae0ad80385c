"""`mella demo`: build the demo corpus and tiny models, materialize every asset for every language, summarise.

Runs go through the Dagster instance in ``DAGSTER_HOME`` (default ``.mella/dagster_home``), so `make ui` shows
them afterwards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl

from mella_assets.settings import Settings

DEFAULT_DAGSTER_HOME = ".mella/dagster_home"
DEFAULT_SITE_PORT = Settings().demo_site_port
# The local instance: SQLite storage in DAGSTER_HOME; `dagster dev` (make ui) runs the daemon for sensors.
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
DEMO_CODE_LOCATION = "mella_assets.demo.definitions"
PRODUCTION_CODE_LOCATION = "mella_assets.definitions"
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


def _write_instance_config(dagster_home: str) -> None:
    home = Path(dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)


def prepare_demo_inputs(lake_root: str, languages: list[str], port: int) -> dict[str, float]:
    """Demo web site + landing WARCs + tiny models in the lake; returns seconds per step."""
    from mella_assets.demo.corpus import build_demo_corpus, demo_texts
    from mella_assets.demo.site import ensure_demo_site_server
    from mella_assets.demo.tiny_models import build_tiny_models
    from mella_assets.lib.lake import LakeStore

    store = LakeStore(lake_root)
    timings = {}
    started = time.perf_counter()
    build_demo_corpus(store.root, f"http://127.0.0.1:{port}", languages)
    ensure_demo_site_server(store.path("demo/site"), port)
    timings["corpus_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    build_tiny_models(store.path("models/tiny"), demo_texts(languages))
    timings["tiny_models_seconds"] = time.perf_counter() - started
    return timings


def materialize_everything(languages: list[str], defs=None, instance=None, log=print) -> dict[str, float]:
    """Every asset, every language, through the Dagster instance (visible in the UI afterwards); returns the
    seconds each run took."""
    import dagster as dg

    if defs is None:
        from mella_assets.demo.definitions import defs
    instance = instance or dg.DagsterInstance.get()
    seconds = {}
    for job_name, partitions in (
        ("language_pipeline_job", languages),
        ("training_job", [None]),
        ("evaluation_job", languages),
        ("report_job", [None]),
    ):
        job = defs.resolve_job_def(job_name)
        for partition in partitions:
            label = f"{job_name}[{partition}]" if partition else job_name
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, partition_key=partition, raise_on_error=False, run_config=QUIET_RUN_CONFIG
            )
            status = "ok" if result.success else "FAILED"
            seconds[label] = time.perf_counter() - started
            log(f"  {label:<32} {status:>6}  {seconds[label]:6.1f} s")
            if not result.success:
                raise RuntimeError(f"{label} failed; open the run in the UI (make ui) for the error")
    return seconds


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
    materialize_everything(codes)
    summary = demo_summary(lake_root)
    with pl.Config(
        tbl_rows=100, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(summary)
    print(
        f"Done in {time.perf_counter() - started:.0f} s. The tiny models are random: their text is gibberish by design."
    )
    print("Browse the runs and assets: make ui  (then open http://127.0.0.1:3000)")
    print('Query the lake: .venv/bin/mella sql "SELECT language, count(*) FROM d_know GROUP BY 1"')
    return summary
