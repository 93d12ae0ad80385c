"""The MELLA code location: assets, checks, jobs, sensors and resources."""

import dagster as dg

from mella_assets import alt_text, captions, crawl, dataset, evaluation, images, training, translations
from mella_assets.jobs import evaluation_job, language_pipeline_job, report_job, training_job
from resources import build_resources
from sensors import ALL_SENSORS

STAGE_MODULES = [crawl, alt_text, images, captions, translations, dataset, training, evaluation]


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The code location with the given resources (default: chosen from the environment)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(STAGE_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(STAGE_MODULES),
        jobs=[language_pipeline_job, training_job, evaluation_job, report_job],
        sensors=ALL_SENSORS,
        resources=resources if resources is not None else build_resources(),
    )


defs = build_definitions()
