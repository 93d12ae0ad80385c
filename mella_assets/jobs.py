"""Jobs, derived from the asset graph: the per-language pipeline (sources, shards, language), training, evaluation,
and the report.

No job lists its assets: each selects a table and what the graph puts upstream of it, so adding a stage to the
graph adds it to the job (docs/architecture.md, "The asset graph").
"""

import dagster as dg

from mella_assets.partitions import page_partition_keys
from mella_assets.tables import (
    CC_SELECTION,
    CRAWL_SOURCES,
    EVALUATION_REPORT,
    EVALUATION_SCORES,
    MELLA_DATASET,
    MELLA_EXPORT,
    TABLES,
)


def _with_neighbors(selection: dg.AssetSelection) -> dg.AssetSelection:
    """A selection plus the tables written together with it (a stage's rejects table)."""
    return selection.required_multi_asset_neighbors()


# Everything per-language upstream of the dataset: crawl files → D_know and D_ling → SFT records. A run has one
# partitions definition, so a language goes through three jobs in turn (LANGUAGE_PHASES): its sources (language),
# its per-page stages (one run per language × shard, runnable at once on several machines), then the rest
# (language: D_know, captions, translations, D_ling, the dataset records), which reads every shard.
# cc_selection (by crawl) is upstream of every shard but runs on its own (selection_job), once per crawl.
SELECTION_SELECTION = dg.AssetSelection.assets(CC_SELECTION.name)
PER_LANGUAGE_SELECTION = _with_neighbors(dg.AssetSelection.assets(MELLA_DATASET.name).upstream()) - SELECTION_SELECTION
SOURCES_SELECTION = _with_neighbors(dg.AssetSelection.assets(CRAWL_SOURCES.name))
SHARD_PIPELINE_SELECTION = _with_neighbors(dg.AssetSelection.assets(*(t.name for t in TABLES.values() if t.sharded)))
LANGUAGE_PIPELINE_SELECTION = PER_LANGUAGE_SELECTION - SOURCES_SELECTION - SHARD_PIPELINE_SELECTION

selection_job = dg.define_asset_job(
    "selection_job",
    selection=SELECTION_SELECTION,
    description="Select one Common Crawl crawl's pages in the registry's languages from its columnar index.",
)
sources_job = dg.define_asset_job(
    "sources_job",
    selection=SOURCES_SELECTION,
    description="Register one language's WARC files (landing/, sources/<code>.txt): the first of its three runs.",
)
shard_pipeline_job = dg.define_asset_job(
    "shard_pipeline_job",
    selection=SHARD_PIPELINE_SELECTION,
    description="Pages → alt texts → images for one language × shard (a site's pages share a shard).",
)
language_pipeline_job = dg.define_asset_job(
    "language_pipeline_job",
    selection=LANGUAGE_PIPELINE_SELECTION,
    description="Every shard of one language → D_know and D_ling → SFT records (after its shard runs).",
)
# The runs that take one language from its crawl files to its dataset records, in order: (job, partitioned by
# language × shard). Each phase's runs need the phase before to have succeeded.
LANGUAGE_PHASES = (("sources_job", False), ("shard_pipeline_job", True), ("language_pipeline_job", False))


def phase_partition_keys(sharded: bool, language: str) -> list[str]:
    """The partition keys of one phase's runs for ``language``: the language, or each of its shards."""
    return [str(key) for key in page_partition_keys(language)] if sharded else [language]


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

ALL_JOBS = [
    selection_job,
    sources_job,
    shard_pipeline_job,
    language_pipeline_job,
    training_job,
    evaluation_job,
    report_job,
]
