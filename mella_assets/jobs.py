"""Jobs, derived from the asset graph: the per-language pipeline, training, evaluation, and the report.

No job lists its assets: each selects a table and what the graph puts upstream of it, so adding a stage to the
graph adds it to the job (docs/architecture.md, "The asset graph").
"""

import dagster as dg

from mella_assets.tables import EVALUATION_REPORT, EVALUATION_SCORES, MELLA_DATASET, MELLA_EXPORT


def _with_neighbors(selection: dg.AssetSelection) -> dg.AssetSelection:
    """A selection plus the tables written together with it (a stage's rejects table)."""
    return selection.required_multi_asset_neighbors()


# Everything per-language upstream of the dataset: crawl files → D_know and D_ling → SFT records.
LANGUAGE_PIPELINE_SELECTION = _with_neighbors(dg.AssetSelection.assets(MELLA_DATASET.name).upstream())

language_pipeline_job = dg.define_asset_job(
    "language_pipeline_job",
    selection=LANGUAGE_PIPELINE_SELECTION,
    description="Crawl files → D_know and D_ling → SFT records, for one language.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=_with_neighbors(dg.AssetSelection.groups("training") | dg.AssetSelection.assets(MELLA_EXPORT.name)),
    description="Export the dataset and fine-tune the base model on every language's train split.",
    # The deployment's run queue admits one run of this pool at a time (deploy/dagster.yaml).
    tags={"mella/pool": "training"},
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=_with_neighbors(dg.AssetSelection.assets(EVALUATION_SCORES.name)),
    description="Base vs fine-tuned model on one language's test split.",
)
report_job = dg.define_asset_job(
    "report_job",
    selection=_with_neighbors(dg.AssetSelection.assets(EVALUATION_REPORT.name)),
    description="Cross-language report.",
)

ALL_JOBS = [language_pipeline_job, training_job, evaluation_job, report_job]
