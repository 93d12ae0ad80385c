"""Training group: fine-tune the base MLLM on every language's train split, outside Dagster, through Pipes."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from mella_assets.dataset import dataset_version, mella_dataset
from mella_assets.lib.cache import content_key
from mella_assets.lib.checkpoints import read_latest_checkpoint, write_latest_checkpoint
from mella_assets.metadata import StageTimer, counts_by, preview_markdown
from resources.lake import Lake
from resources.training import Training

TRAIN_SCRIPT_MODULE = "mella_assets.external.train"


def write_train_file(records: pl.DataFrame, lake: Lake, path: Path) -> None:
    """The JSONL the training script reads: absolute image path, prompt, answer."""
    with path.open("w", encoding="utf-8") as handle:
        for row in records.iter_rows(named=True):
            example = {
                "image": str(lake.path(row["image_key"])),
                "prompt": row["prompt"],
                "answer": row["text"],
            }
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")


@dg.asset(group_name="training", deps=[mella_dataset], kinds={"pytorch"})
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """LoRA (or full) SFT of the base MLLM on the train split of all languages, run as a separate process via
    Dagster Pipes. The checkpoint lands in ``checkpoints/<id>/`` with the data version it was trained on; the
    same data and settings reuse the existing checkpoint instead of training again."""
    timer = StageTimer()
    records = lake.store.read_table_all_languages("mella_dataset")
    if records.is_empty():
        raise dg.Failure("mella_dataset has no rows: materialize the language pipeline first")
    train = records.filter(pl.col("split") == "train")
    data_version = dataset_version(train)
    settings = {
        "base_model": training.base_model,
        "method": training.method,
        "max_steps": training.max_steps,
        "learning_rate": training.learning_rate,
        "batch_size": training.batch_size,
        "seed": training.seed,
    }
    checkpoint_id = content_key(data_version, settings)[:16]
    checkpoint_key = f"checkpoints/{checkpoint_id}"
    latest = read_latest_checkpoint(lake.store)
    summary = {
        "data_version": data_version,
        "train_rows": train.height,
        "train_rows_by_language": dg.MetadataValue.json(counts_by(train, "language")),
        "checkpoint_key": checkpoint_key,
        "checkpoint_uri": lake.store.uri(checkpoint_key),
    }
    if latest and latest["checkpoint_key"] == checkpoint_key and lake.store.exists(checkpoint_key):
        context.log.info(f"checkpoint {checkpoint_id} already trained on data version {data_version}: reused")
        return dg.MaterializeResult(metadata={**summary, "reused": True, "wall_seconds": round(timer.seconds, 3)})

    with tempfile.TemporaryDirectory(prefix="mella-train-") as tmp:
        train_file = Path(tmp) / "train.jsonl"
        write_train_file(train, lake, train_file)
        output_dir = Path(tmp) / "checkpoint"
        extras = {
            **settings,
            "base_model": lake.resolve_model(training.base_model),
            "train_file": str(train_file),
            "output_dir": str(output_dir),
        }
        invocation = pipes_subprocess_client.run(
            context=context, command=[training.python, "-m", TRAIN_SCRIPT_MODULE], extras=extras
        )
        reported = invocation.get_materialize_result()
        lake.store.put_dir(checkpoint_key, output_dir)
    record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "train_rows": train.height,
        "method": training.method,
        "base_model": training.base_model,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
    }
    write_latest_checkpoint(lake.store, record)
    history = lake.read_table_or_empty("finetuned_checkpoint")
    row = pl.DataFrame([{k: v for k, v in record.items() if k != "settings"}])
    history = pl.concat([history, row], how="diagonal_relaxed") if history.height else row
    lake.write_table("finetuned_checkpoint", None, history.unique("checkpoint_key", keep="last", maintain_order=True))
    metadata = {key: value for key, value in reported.metadata.items()} if reported.metadata else {}
    return dg.MaterializeResult(
        metadata={
            **metadata,
            **summary,
            "reused": False,
            "wall_seconds": round(timer.seconds, 3),
            "history": dg.MetadataValue.md(preview_markdown(history.tail(5))),
        }
    )
