"""Jobs: the per-language pipeline, training, evaluation, and the report."""

import dagster as dg

from mella_assets.alt_text import alt_text_pairs
from mella_assets.captions import mllm_captions
from mella_assets.crawl import crawl_sources, raw_crawl
from mella_assets.dataset import mella_dataset, mella_export
from mella_assets.evaluation import evaluation_report, evaluation_scores
from mella_assets.images import d_know, images
from mella_assets.training import finetuned_checkpoint
from mella_assets.translations import d_ling, translations

LANGUAGE_PIPELINE_ASSETS = [
    crawl_sources,
    raw_crawl,
    alt_text_pairs,
    images,
    d_know,
    mllm_captions,
    translations,
    d_ling,
    mella_dataset,
]

language_pipeline_job = dg.define_asset_job(
    "language_pipeline_job",
    selection=dg.AssetSelection.assets(*LANGUAGE_PIPELINE_ASSETS),
    description="Crawl files → D_know and D_ling → SFT records, for one language.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(mella_export, finetuned_checkpoint),
    description="Export the dataset and fine-tune the base model on every language's train split.",
    # The deployment's run queue admits one run of this pool at a time (deploy/dagster.yaml).
    tags={"mella/pool": "training"},
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(evaluation_scores),
    description="Base vs fine-tuned model on one language's test split.",
)
report_job = dg.define_asset_job(
    "report_job", selection=dg.AssetSelection.assets(evaluation_report), description="Cross-language report."
)
