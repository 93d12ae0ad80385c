"""Asset specs and materialization results from the table registry (``mella_assets/tables.py``).

Every stage declares its assets through :func:`stage_specs`, so each table a stage writes — its rejects table too
— is an asset in the graph with its partitions, columns and description, and each write reports through
:func:`table_result` (docs/architecture.md, "The table contract").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
import polars as pl

from mella_assets.languages import Language
from mella_assets.lib.cache import ConfigurationError
from mella_assets.lib.progress import ProgressLog
from mella_assets.lib.watchdog import StageTimeout
from mella_assets.metadata import counts_by, preview_table
from mella_assets.partitions import (
    CRAWL_PARTITIONS,
    LANGUAGE_OF_PAGES,
    LANGUAGE_PARTITIONS,
    PAGE_PARTITIONS,
    partition_language_and_shard,
)
from mella_assets.settings import Settings, load_settings
from mella_assets.tables import TABLES, Table, tables_written_by

# The concurrency pool of every step that loads a model (captioning, translation, evaluation, training): the
# deployment's instance gives it one slot per GPU (deploy/dagster.yaml, `concurrency: pools`), so two such steps
# never share a GPU; on Kubernetes their step pods request a GPU (definitions.gpu_step_k8s_configs).
GPU_POOL = "gpu"
# The concurrency pool of raw_crawl, the step that reads Common Crawl by range: the instance's pool limit bounds how
# many shard runs read at once (each at MELLA_CC_RATE requests/s), so the fan-out stays within what Common Crawl
# serves without 503 SlowDown (deploy/dagster.yaml: `dagster instance concurrency set commoncrawl N`).
COMMONCRAWL_POOL = "commoncrawl"
# The pool of mella_dataset: a language's split honours every other language's written split (no test image in any
# train split), so two languages must not draw their splits at the same time, blind to each other; the instance's
# default pool limit (1) runs them one after another.
DATASET_SPLITS_POOL = "dataset_splits"


class NetworkRetryPolicy(dg.RetryPolicy):
    """The retry policy of a network-bound step: exponential backoff (delay, 3 x, 7 x ...) with jitter of one delay
    either way, so steps that failed together on one outage do not come back together.

    Its retries and base delay are the settings ``MELLA_RETRY_MAX_RETRIES`` and ``MELLA_RETRY_DELAY_S``, read when
    a step fails (Dagster asks the policy then), not when the code location loads: like every setting, read where
    it is used, so a deployment or a test changes them through the environment."""

    def __new__(cls) -> NetworkRetryPolicy:
        defaults = Settings()
        return super().__new__(
            cls, defaults.retry_max_retries, defaults.retry_delay_s, dg.Backoff.EXPONENTIAL, dg.Jitter.PLUS_MINUS
        )

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return load_settings().retry_max_retries

    @property
    def delay(self) -> float:  # type: ignore[override]
        return load_settings().retry_delay_s

    def __repr__(self) -> str:
        return "NetworkRetryPolicy(MELLA_RETRY_MAX_RETRIES, MELLA_RETRY_DELAY_S)"


# The one retry policy, on every step that waits on another host: crawl_sources (downloads), raw_crawl (range
# reads), images (image hosts) and the model steps, whose failures are retried only with a remote backend
# (:func:`retried_only_when_remote`). Every such step resumes from what it cached, so a retry redoes only the rest.
NETWORK_RETRY = NetworkRetryPolicy()


@contextmanager
def retried_only_when_remote(remote: bool) -> Iterator[None]:
    """Run a model step's work so that its failure is retried by :data:`NETWORK_RETRY` only when ``remote`` (an
    OpenAI-compatible server: it may be restarting or overloaded past the client's own retries). An in-process
    model failing is not transient (a wrong path, a broken model, the same GPU out of memory again): the step fails
    at once, without the retry delays. Neither is a stage that ran past its deadline (the deadline bounds its time,
    a retry would only extend it) nor a server refusing the configuration (a bad key, a wrong URL or model)."""
    try:
        yield
    except (StageTimeout, ConfigurationError) as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    except dg.Failure as failure:
        failure.allow_retries = failure.allow_retries and remote
        raise
    except Exception as error:
        if remote:
            raise
        raise dg.Failure(f"{type(error).__name__}: {error}", allow_retries=False) from error


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in table.columns.items()])


def partitions_of(table: Table) -> dg.PartitionsDefinition | None:
    """Language × shard for a sharded (per-page) table, language for a per-language one, else none."""
    if table.by_crawl:
        return CRAWL_PARTITIONS
    if table.sharded:
        return PAGE_PARTITIONS
    return LANGUAGE_PARTITIONS if table.partitioned else None


def table_dep(table: Table, dep: Table) -> dg.AssetDep:
    """``table`` reads ``dep``: a language-level table and a sharded one meet on the language (every shard of a
    language reads the language's partition; a language's partition reads every shard of it)."""
    if table.partitioned and dep.partitioned and table.sharded != dep.sharded:
        return dg.AssetDep(dep.name, partition_mapping=LANGUAGE_OF_PAGES)
    if dep.by_crawl:  # a shard reads its rows of every crawl's selection
        return dg.AssetDep(dep.name, partition_mapping=dg.AllPartitionMapping())
    return dg.AssetDep(dep.name)


def table_spec(table: Table, deps: Iterable[Table] = ()) -> dg.AssetSpec:
    """The asset spec of one registered table."""
    return dg.AssetSpec(
        key=table.name,
        deps=[table_dep(table, dep) for dep in deps],
        description=table.description,
        group_name=table.stage,
        partitions_def=partitions_of(table),
        kinds=set(table.kinds),
        metadata={"dagster/column_schema": column_schema(table)},
    )


def stage_specs(writer: str, deps: Iterable[Table] = ()) -> list[dg.AssetSpec]:
    """The specs of every table the asset ``writer`` writes (its own table first, then its rejects or companion
    tables), each depending on ``deps``."""
    deps = list(deps)
    tables = tables_written_by(writer)
    if not tables:
        raise ValueError(f"no table in mella_assets/tables.py is written by {writer!r}")
    return [table_spec(table, deps) for table in tables]


def language_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Language:
    """The run's language (of a language or a language × shard partition), as the registry's ``Language``."""
    return partition_language_and_shard(context.partition_key)[0]


def each_shard(
    context: dg.AssetExecutionContext,
    run_shard: Callable[[Language, str], dg.MaterializeResult | tuple[dg.MaterializeResult, ...]],
) -> dg.MaterializeResult | tuple[dg.MaterializeResult, ...]:
    """Run a shard asset's body for every language × shard partition of the run, one after another (a backfill
    batches MELLA_SHARDS_PER_RUN of them per run: :data:`~mella_assets.partitions.SHARD_BACKFILL`), so memory is
    one shard's at a time. Each partition's materialization gets its own metadata (``add_asset_metadata`` by
    partition key): counts stay per shard in the UI, whatever the batch."""
    outcomes = []
    for key in context.partition_keys:
        language, shard = partition_language_and_shard(key)
        if shard is None:
            raise ValueError(f"partition {key!r} is not a language × shard partition")
        outcome = run_shard(language, shard)
        outcomes.append((key, (outcome,) if isinstance(outcome, dg.MaterializeResult) else outcome))
    for key, results in outcomes:
        for result in results:
            context.add_asset_metadata(dict(result.metadata or {}), asset_key=result.asset_key, partition_key=key)
    bare = tuple(dg.MaterializeResult(asset_key=result.asset_key) for result in outcomes[0][1])
    return bare if len(bare) > 1 else bare[0]


def progress_log(context: dg.AssetExecutionContext) -> ProgressLog:
    """Progress lines of a stage's long loops, to its run log every ``MELLA_PROGRESS_INTERVAL_S`` seconds."""
    return ProgressLog(context.log, load_settings().progress_interval_s)


def table_result(table: Table, frame: pl.DataFrame, metadata: Mapping[str, Any] | None = None) -> dg.MaterializeResult:
    """The materialization of one table: its row count and column schema (the catalog shows both), rows by reason
    for a rejects table, a preview, and ``metadata``."""
    base: dict[str, Any] = {"dagster/row_count": frame.height, "dagster/column_schema": column_schema(table)}
    if table.is_rejects:
        base["rows_by_reason"] = dg.MetadataValue.json(counts_by(frame, "reason"))
        base["preview"] = preview_table(frame)
    return dg.MaterializeResult(asset_key=table.name, metadata={**base, **(metadata or {})})


def registered(name: str) -> Table:
    return TABLES[name]
