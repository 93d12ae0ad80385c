"""language_phases_sensor: takes a language through its three runs (mella_assets/jobs.py, ``LANGUAGE_PHASES``).

A successful ``sources_job`` run of a language requests one ``shard_pipeline_job`` run per shard of it; a
successful shard run whose language has every shard materialized since its sources were last registered requests
the language's ``language_pipeline_job`` run. Run keys name the sources materialization they follow, so a language
gets one language run per registration however many shard runs finish.
"""

import dagster as dg

from mella_assets.jobs import language_pipeline_job, page_partition_keys, shard_pipeline_job, sources_job
from mella_assets.partitions import partition_language_and_shard
from mella_assets.tables import CRAWL_SOURCES, IMAGES


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


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[sources_job, shard_pipeline_job],
    request_jobs=[shard_pipeline_job, language_pipeline_job],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="sources_job done → the language's shard runs; its last shard run done → its language run.",
)
def language_phases_sensor(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if not partition:
        return dg.SkipReason(f"run {run.run_id} has no partition")
    requests = next_phase_requests(context.instance, run.job_name, partition)
    return requests or dg.SkipReason(f"{partition}: waiting for the language's other shards")
