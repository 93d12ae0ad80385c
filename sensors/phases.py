"""language_phases_sensor: takes a language through its three runs (mella_assets/jobs.py, ``LANGUAGE_PHASES``).

A successful ``sources_job`` run of a language requests one ``shard_pipeline_job`` run per shard of it; a
successful shard run whose language has every shard materialized since its sources were last registered requests
the language's ``language_pipeline_job`` run. A backfill's runs count too: a run of several shards (a partition
range, ``MELLA_SHARDS_PER_RUN``) for each language in its range. Run keys name the sources materialization they
follow, so a language gets one language run per registration however many shard runs finish.
"""

import dagster as dg

from mella_assets.jobs import language_pipeline_job, page_partition_keys, shard_pipeline_job, sources_job
from mella_assets.languages import LANGUAGES
from mella_assets.partitions import partition_language_and_shard
from mella_assets.tables import CRAWL_SOURCES, IMAGES

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1, ascending=False
    ).records
    return records[0] if records else None


def next_phase_requests(instance: dg.DagsterInstance, job_name: str, partition: str) -> list[dg.RunRequest]:
    """The runs that follow a successful run of ``job_name`` for ``partition`` (see the module docstring)."""
    language, _shard = partition_language_and_shard(partition)
    sources = _latest(instance, CRAWL_SOURCES.name, language.code)
    if sources is None:
        return []
    tags = {"mella/trigger": "phase"}
    if job_name == sources_job.name:
        return [
            dg.RunRequest(
                run_key=f"shards-{sources.storage_id}-{key}", job_name=shard_pipeline_job.name,
                partition_key=str(key), tags=tags,
            )
            for key in page_partition_keys(language.code)
        ]  # fmt: skip
    if job_name == shard_pipeline_job.name:
        # The last step of a shard run writes `images`: a shard is done when that is newer than the sources.
        shards = [_latest(instance, IMAGES.name, str(key)) for key in page_partition_keys(language.code)]
        if all(record is not None and record.storage_id > sources.storage_id for record in shards):
            return [
                dg.RunRequest(
                    run_key=f"language-{sources.storage_id}-{language.code}", job_name=language_pipeline_job.name,
                    partition_key=language.code, tags=tags,
                )
            ]  # fmt: skip
    return []


def run_languages(run: dg.DagsterRun) -> list[str]:
    """The languages a run worked on: its partition's, or every language of its partition range (a backfill batches
    MELLA_SHARDS_PER_RUN shards in a run, and a batch may cross from one language's shards to the next's: keys sort
    language first)."""
    if partition := run.tags.get("dagster/partition"):
        return [partition_language_and_shard(partition)[0].code]
    start, end = run.tags.get(RANGE_START), run.tags.get(RANGE_END)
    if not (start and end):
        return []
    first, last = (partition_language_and_shard(key)[0].code for key in (start, end))
    return [code for code in sorted(LANGUAGES) if first <= code <= last]


def phase_of(run: dg.DagsterRun) -> str | None:
    """The phase job a successful run stands for: its job, or for a backfill's run of the assets (Dagster's own
    asset job) the phase whose last table it wrote: ``crawl_sources`` or the shards' ``images``."""
    if run.job_name in (sources_job.name, shard_pipeline_job.name):
        return run.job_name
    written = run.asset_selection or set()
    if dg.AssetKey(IMAGES.name) in written:
        return shard_pipeline_job.name
    return sources_job.name if dg.AssetKey(CRAWL_SOURCES.name) in written else None


def requests_after(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.RunRequest]:
    """The runs that follow a successful ``run`` (a phase job's, or a backfill's) for each language it worked on."""
    phase = phase_of(run)
    if phase is None:
        return []
    return [request for code in run_languages(run) for request in next_phase_requests(instance, phase, code)]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    # Every job of the location: the phase jobs, and the runs a backfill of the shard assets launches.
    request_jobs=[shard_pipeline_job, language_pipeline_job],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="sources_job done → the language's shard runs; its last shard run done → its language run.",
)
def language_phases_sensor(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if phase_of(run) is None or not run_languages(run):
        return dg.SkipReason(f"run {run.run_id} is not a language's sources or shard run")
    requests = requests_after(context.instance, run)
    return requests or dg.SkipReason(f"{', '.join(run_languages(run))}: waiting for the language's other shards")
