"""crawl_landing_sensor: a new WARC file in ``landing/<code>/`` requests a run of that language's ``sources_job``
(its first phase; ``language_phases_sensor`` then requests its shard runs and its language run).

Its first tick (an empty cursor: just switched on, or reset) starts from what the lake already holds: a file that
``crawl_sources`` registered with the same size, in a language whose ``raw_crawl`` is written, counts as seen, so
switching the sensor on after the demo requests nothing until a new WARC lands.
"""

import hashlib
import json

import dagster as dg

from mella_assets.crawl.landing import new_landing_files
from mella_assets.languages import LANGUAGES
from mella_assets.resources.lake import Lake
from mella_assets.tables import CRAWL_SOURCES, RAW_CRAWL

SOURCES_JOB = "sources_job"


@dg.sensor(
    job_name=SOURCES_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches landing/<code>/ for new or changed WARC files; one sources_job run per language that has "
    "some (language_phases_sensor runs the rest). "
    "Its first tick counts the WARCs the lake already registered and extracted as seen.",
)
def crawl_landing_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else processed_landing_files(lake)
    listing = [(key, lake.size(key)) for key in lake.list("landing")]
    new = new_landing_files(listing, seen, LANGUAGES)
    requests = []
    for language, keys in sorted(new.items()):
        digest = hashlib.sha256("\n".join(f"{k}:{dict(listing)[k]}" for k in sorted(keys)).encode()).hexdigest()
        requests.append(
            dg.RunRequest(
                run_key=f"landing-{language}-{digest[:16]}",
                partition_key=language,
                tags={"mella/trigger": "landing", "mella/new_files": str(len(keys))},
            )
        )
    seen.update({key: size for key, size in listing})
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


def processed_landing_files(lake: Lake) -> dict[str, int]:
    """Landing key → size of every WARC a language's pipeline already registered and extracted (the cursor of a
    first tick)."""
    processed: dict[str, int] = {}
    for code, language in LANGUAGES.items():
        if not lake.has(RAW_CRAWL, language):
            continue
        sources = lake.read_or_empty(CRAWL_SOURCES, language)
        landed = sources.filter(sources["key"].str.starts_with(f"landing/{code}/"))
        processed.update(zip(landed["key"].to_list(), landed["size"].to_list(), strict=True))
    return processed
