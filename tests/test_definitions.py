"""The asset graph is the contract of docs/architecture.md ("The asset graph"): names, groups, partitions and
lineage."""

import dagster as dg

from mella_assets.definitions import defs
from mella_assets.languages import DEFAULT_LANGUAGE_CODES
from mella_assets.partitions import CRAWL_PARTITIONS, PAGE_PARTITIONS
from mella_assets.tables import TABLES

# Each rejects table (and evaluation_samples) is written with its table and has the same parents.
LINEAGE = {
    "crawl_sources": set(),
    "crawl_source_rejects": set(),
    "cc_selection": set(),
    "raw_crawl": {"crawl_sources", "cc_selection"},
    "alt_text_pairs": {"raw_crawl"},
    "alt_text_rejects": {"raw_crawl"},
    "images": {"alt_text_pairs"},
    "image_rejects": {"alt_text_pairs"},
    "d_know": {"alt_text_pairs", "images"},
    "mllm_captions": {"images"},
    "caption_rejects": {"images"},
    "translations": {"mllm_captions"},
    "translation_rejects": {"mllm_captions"},
    "d_ling": {"translations", "images"},
    "mella_dataset": {"d_know", "d_ling"},
    "mella_dataset_rejects": {"d_know", "d_ling"},
    "mella_export": {"mella_dataset"},
    "finetuned_checkpoint": {"mella_dataset"},
    "evaluation_scores": {"mella_dataset", "finetuned_checkpoint"},
    "evaluation_samples": {"mella_dataset", "finetuned_checkpoint"},
    "evaluation_report": {"evaluation_scores"},
}
GROUPS = {
    "crawl": {"crawl_sources", "crawl_source_rejects", "cc_selection", "raw_crawl"},
    "know": {"alt_text_pairs", "alt_text_rejects", "images", "image_rejects", "d_know"},
    "ling": {"mllm_captions", "caption_rejects", "translations", "translation_rejects", "d_ling"},
    "dataset": {"mella_dataset", "mella_dataset_rejects", "mella_export"},
    "training": {"finetuned_checkpoint"},
    "evaluation": {"evaluation_scores", "evaluation_samples", "evaluation_report"},
}
UNPARTITIONED = {"mella_export", "finetuned_checkpoint", "evaluation_report"}


def specs():
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_the_asset_graph_has_exactly_the_designed_lineage():
    nodes = specs()
    assert set(nodes) == set(LINEAGE)
    for name, parents in LINEAGE.items():
        assert {key.to_user_string() for key in nodes[name].parent_keys} == parents, name


def test_assets_are_grouped_by_stage():
    for group, names in GROUPS.items():
        assert {name for name, node in specs().items() if node.group_name == group} == names


def test_per_language_assets_are_partitioned_by_the_eight_languages():
    for name, node in specs().items():
        if name in UNPARTITIONED:
            assert node.partitions_def is None, name
        elif TABLES[name].by_crawl:  # Common Crawl selections: one partition per crawl the user registers
            assert node.partitions_def == CRAWL_PARTITIONS, name
        elif TABLES[name].sharded:  # the per-page stages: language × shard
            assert node.partitions_def == PAGE_PARTITIONS, name
            assert node.partitions_def.get_partitions_def_for_dimension("language").get_partition_keys() == list(
                DEFAULT_LANGUAGE_CODES
            ), name
        else:
            assert node.partitions_def.get_partition_keys() == list(DEFAULT_LANGUAGE_CODES), name


def test_the_dataset_checks_block_training_and_both_sensors_are_registered():
    graph = defs.resolve_asset_graph()
    check_keys = {key.name for key in graph.asset_check_keys}
    assert {"mella_dataset_schema", "mella_dataset_not_empty", "mella_dataset_split_leakage"} <= check_keys
    assert {sensor.name for sensor in defs.sensors} == {
        "crawl_landing_sensor",
        "language_phases_sensor",
        "retraining_sensor",
        "automation_sensor",  # evaluation after training, the report after the evaluations: automation conditions
        "training_failure_sensor",
    }
    assert "evaluation_report_no_regression" in check_keys
    assert {job.name for job in defs.jobs} >= {
        "sources_job",
        "shard_pipeline_job",
        "language_pipeline_job",
        "training_job",
        "evaluation_job",
        "report_job",
    }
    assert isinstance(defs.resources["pipes_subprocess_client"], dg.PipesSubprocessClient)
