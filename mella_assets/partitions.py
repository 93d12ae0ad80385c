"""The partitions of the asset graph: languages, shards of a language, and the two together.

Every per-language asset is partitioned by language (one partition per language of the registry). The per-page
stages (``raw_crawl``, ``alt_text_pairs``, ``images``: tables declared ``sharded`` in ``tables.py``) are
partitioned language × shard, so a language's pages can be worked on by several runs (pods) at once; a page's
shard is the hash of its site (:func:`mella_assets.crawl.cc_index.shard_of`), so a site's pages stay together and
site-level filters and per-host politeness keep working inside one shard. Language-level assets read every shard
of their language (:data:`LANGUAGE_OF_PAGES`).

Kept apart from ``languages.py`` so the registry stays Dagster-free (the tiny-model builders and the GPU check
import it on machines without Dagster).
"""

from __future__ import annotations

import warnings

import dagster as dg

from mella_assets.languages import LANGUAGES, Language
from mella_assets.lib.lake import shard_keys
from mella_assets.settings import load_settings

LANGUAGE_DIMENSION = "language"
SHARD_DIMENSION = "shard"


LANGUAGE_PARTITIONS = dg.StaticPartitionsDefinition(list(LANGUAGES))
# Partitions definitions are fixed when the code location loads: MELLA_SHARDS is read then (the only setting read
# at import; a changed value takes effect when the location reloads).
SHARD_PARTITIONS = dg.StaticPartitionsDefinition(shard_keys(load_settings().shards))
PAGE_PARTITIONS = dg.MultiPartitionsDefinition(
    {LANGUAGE_DIMENSION: LANGUAGE_PARTITIONS, SHARD_DIMENSION: SHARD_PARTITIONS}
)
# A language × shard backfill runs MELLA_SHARDS_PER_RUN shards per run (one pod), in turn: each shard asset loops
# over its run's partition keys (specs.each_shard). Fixed when the code location loads, like the shard count.
SHARD_BACKFILL = dg.BackfillPolicy.multi_run(load_settings().shards_per_run)
# Common Crawl crawls (e.g. CC-MAIN-2024-42): added in the UI (the asset's partitions, "Add partition"), by
# `mella cc-select --register` or by the demo; `cc_selection` is partitioned by them.
CRAWL_PARTITIONS = dg.DynamicPartitionsDefinition(name="crawls")
# A language-level asset reads (or is read by) every shard of its language. (Beta in Dagster 1.13, and the one
# mapping that joins a dimension of a multi-partition to a single partitions definition.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    LANGUAGE_OF_PAGES = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=LANGUAGE_DIMENSION)


def page_partition_key(language: str, shard: str) -> dg.MultiPartitionKey:
    """The language × shard partition key (shown as ``cs|00`` in the UI)."""
    return dg.MultiPartitionKey({LANGUAGE_DIMENSION: language, SHARD_DIMENSION: shard})


def page_partition_keys(language: str) -> list[dg.MultiPartitionKey]:
    """Every shard partition of ``language``, in shard order."""
    return [page_partition_key(language, shard) for shard in SHARD_PARTITIONS.get_partition_keys()]


def partition_language_and_shard(partition_key: str) -> tuple[Language, str | None]:
    """The registry's ``Language`` of a run's partition key, and its shard (None for a language partition)."""
    if isinstance(partition_key, dg.MultiPartitionKey) or "|" in partition_key:
        keys = (
            partition_key.keys_by_dimension
            if isinstance(partition_key, dg.MultiPartitionKey)
            else PAGE_PARTITIONS.get_partition_key_from_str(partition_key).keys_by_dimension
        )
        return LANGUAGES[keys[LANGUAGE_DIMENSION]], keys[SHARD_DIMENSION]
    return LANGUAGES[partition_key], None
