"""Dataset group: the merged SFT records per language (with blocking checks) and the exports."""

import hashlib
import io
import json

import dagster as dg
import polars as pl

from mella_assets.images import d_know
from mella_assets.languages import LANGUAGE_PARTITIONS
from mella_assets.lib.dataset import DATASET_SCHEMA, build_sft_records, split_leakage
from mella_assets.lib.export import dataset_card, llama_factory_dataset_info, sharegpt_bytes
from mella_assets.metadata import StageTimer, counts_by, table_metadata
from mella_assets.translations import d_ling
from resources.lake import Lake


class DatasetConfig(dg.Config):
    test_fraction: float = 0.2
    """Share of image groups assigned to the test split."""


@dg.asset(partitions_def=LANGUAGE_PARTITIONS, group_name="dataset", deps=[d_know, d_ling], kinds={"parquet"})
def mella_dataset(context: dg.AssetExecutionContext, lake: Lake, config: DatasetConfig) -> dg.MaterializeResult:
    """SFT records: a native prompt from the prompt bank and the answer (alt text for `know`, translated
    caption for `ling`), split into train / test by image group so no image crosses splits."""
    timer = StageTimer()
    language = context.partition_key
    know = lake.read_table("d_know", language)
    ling = lake.read_table("d_ling", language)
    frame = build_sft_records(know, ling, language, config.test_fraction)
    lake.write_table("mella_dataset", language, frame)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=know.height + ling.height,
            output=frame.drop("conversation"),
            extra={
                "by_source": dg.MetadataValue.json(counts_by(frame, "source")),
                "by_split": dg.MetadataValue.json(counts_by(frame, "split")),
                "train_rows": int((frame["split"] == "train").sum()),
                "test_rows": int((frame["split"] == "test").sum()),
            },
        )
    )


@dg.asset_check(asset=mella_dataset, blocking=True, description="Columns and types match the dataset contract.")
def mella_dataset_schema(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    frame = lake.read_table("mella_dataset", context.partition_key if context.has_partition_key else None)
    mismatched = {c: str(frame.schema.get(c)) for c, t in DATASET_SCHEMA.items() if frame.schema.get(c) != t}
    return dg.AssetCheckResult(passed=not mismatched, metadata={"mismatched": dg.MetadataValue.json(mismatched)})


@dg.asset_check(asset=mella_dataset, blocking=True, description="Train and test are non-empty.")
def mella_dataset_not_empty(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    frame = lake.read_table("mella_dataset", context.partition_key if context.has_partition_key else None)
    splits = counts_by(frame, "split")
    return dg.AssetCheckResult(passed=frame.height > 0, metadata={"by_split": dg.MetadataValue.json(splits)})


@dg.asset_check(asset=mella_dataset, blocking=True, description="No image group is in both train and test.")
def mella_dataset_split_leakage(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    frame = lake.read_table("mella_dataset", context.partition_key if context.has_partition_key else None)
    leaked = split_leakage(frame)
    return dg.AssetCheckResult(passed=leaked == 0, metadata={"leaked_image_groups": leaked})


def dataset_version(records: pl.DataFrame) -> str:
    """Content version of a set of records: a hash of their ids and splits."""
    digest = hashlib.sha256()
    for rid, split in records.select("id", "split").sort("id").iter_rows():
        digest.update(f"{rid}:{split}\n".encode())
    return digest.hexdigest()[:16]


@dg.asset(group_name="dataset", deps=[mella_dataset], kinds={"json", "parquet"})
def mella_export(lake: Lake) -> dg.MaterializeResult:
    """Every language's records exported for other trainers (ShareGPT JSON + LLaMA-Factory entry, Parquet)
    with a dataset card, under ``exports/<version>/``."""
    timer = StageTimer()
    records = lake.store.read_table_all_languages("mella_dataset")
    if records.is_empty():
        records = pl.DataFrame(schema=DATASET_SCHEMA)
    version = dataset_version(records)
    prefix = f"exports/{version}"
    store = lake.store
    store.put_bytes(f"{prefix}/mella_sharegpt.json", sharegpt_bytes(records))
    info = llama_factory_dataset_info("mella_sharegpt.json")
    store.put_bytes(f"{prefix}/dataset_info.json", json.dumps(info, indent=2).encode())
    buffer = io.BytesIO()
    records.write_parquet(buffer)
    store.put_bytes(f"{prefix}/data.parquet", buffer.getvalue())
    store.put_bytes(f"{prefix}/README.md", dataset_card(records, version).encode("utf-8"))
    store.put_bytes("exports/LATEST", version.encode())
    files = pl.DataFrame(
        {
            "version": version,
            "key": [
                f"{prefix}/{name}" for name in ("mella_sharegpt.json", "dataset_info.json", "data.parquet", "README.md")
            ],
        }
    )
    lake.write_table("mella_export", None, files)
    return dg.MaterializeResult(
        metadata=table_metadata(
            timer=timer,
            rows_in=records.height,
            output=files,
            extra={
                "version": version,
                "export_uri": store.uri(prefix),
                "by_language": dg.MetadataValue.json(counts_by(records, "language")),
            },
        )
    )
