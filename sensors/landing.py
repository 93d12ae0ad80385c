"""crawl_landing_sensor: a new WARC file in ``landing/<code>/`` requests one run of that language's pipeline."""

import hashlib
import json

import dagster as dg

from mella_assets.crawl.landing import new_landing_files
from mella_assets.languages import LANGUAGES
from mella_assets.resources.lake import Lake

LANGUAGE_PIPELINE_JOB = "language_pipeline_job"


@dg.sensor(
    job_name=LANGUAGE_PIPELINE_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches landing/<code>/ for new or changed WARC files; one run per language that has some.",
)
def crawl_landing_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
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
