"""Training group: fine-tune the base MLLM on every language's train split, outside Dagster, through Pipes."""

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from mella_assets.dataset import dataset_version, mella_dataset
from mella_assets.lib.cache import content_key
from mella_assets.lib.checkpoints import (
    CHECKPOINT_CONFIG_FILE,
    combined_data_version,
    read_latest_checkpoint,
    write_latest_checkpoint,
)
from mella_assets.lib.dataset import training_gate_problems
from mella_assets.lib.lake import atomic_write_bytes
from mella_assets.lib.sft import SFTConfig, resume_info
from mella_assets.metadata import StageTimer, counts_by, preview_markdown
from resources.lake import Lake
from resources.training import Training


def write_train_file(records: pl.DataFrame, lake: Lake, path: Path) -> None:
    """The JSONL the training script reads: absolute image path, prompt, answer (written atomically)."""
    lines = []
    for row in records.iter_rows(named=True):
        example = {"image": str(lake.local_path(row["image_key"])), "prompt": row["prompt"], "answer": row["text"]}
        lines.append(json.dumps(example, ensure_ascii=False) + "\n")
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def partition_data_versions(train: pl.DataFrame) -> dict[str, str]:
    """The data version of each language partition's train rows."""
    return {
        str(language): dataset_version(group) for (language,), group in train.group_by("language", maintain_order=True)
    }


@dg.asset(group_name="training", deps=[mella_dataset], kinds={"pytorch"})
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """LoRA (or full) SFT of the base MLLM on the train split of all languages, run as a separate process via
    Dagster Pipes (`torchrun` when configured). The checkpoint lands in ``checkpoints/<id>/`` with its config and
    data version (a hash of the language partitions' versions); the same data and settings reuse it. Resume
    state is saved every ``save_every`` steps, so a killed run rematerialized with the same data resumes."""
    timer = StageTimer()
    records = lake.store.read_table_all_languages("mella_dataset")
    if records.is_empty():
        raise dg.Failure("mella_dataset has no rows: materialize the language pipeline first")
    # The dataset's blocking checks guard runs that materialize mella_dataset; training_job reads the lake as
    # it is, so the same conditions are verified here before any GPU time is spent.
    problems = {
        language: found
        for (language,), frame in records.group_by("language", maintain_order=True)
        if (found := training_gate_problems(frame, language, lake.store.exists))
    }
    if problems:
        raise dg.Failure(
            "mella_dataset fails its blocking checks; fix the data and rematerialize it before training",
            metadata={"problems": dg.MetadataValue.json(problems)},
        )
    train = records.filter(pl.col("split") == "train")
    partitions = partition_data_versions(train)
    data_version = combined_data_version(partitions)
    settings = {
        "base_model": training.base_model,
        "method": training.method,
        "max_steps": training.max_steps,
        "learning_rate": training.learning_rate,
        "batch_size": training.batch_size,
        "seed": training.seed,
        "nproc_per_node": training.nproc_per_node,
    }
    checkpoint_id = content_key(data_version, settings)[:16]
    checkpoint_key = f"checkpoints/{checkpoint_id}"
    latest = read_latest_checkpoint(lake.store)
    summary = {
        "data_version": data_version,
        "partition_data_versions": dg.MetadataValue.json(partitions),
        "train_rows": train.height,
        "train_rows_by_language": dg.MetadataValue.json(counts_by(train, "language")),
        "checkpoint_key": checkpoint_key,
        "checkpoint_uri": lake.store.uri(checkpoint_key),
    }
    if latest and latest["checkpoint_key"] == checkpoint_key and lake.store.exists(checkpoint_key):
        context.log.info(f"checkpoint {checkpoint_id} already trained on data version {data_version}: reused")
        return dg.MaterializeResult(
            metadata={**summary, "reused": True, "wall_seconds": round(timer.seconds, 3)},
            data_version=dg.DataVersion(data_version),
        )

    work_dir = training.work_dir(lake.store.local_root, checkpoint_id)
    output_dir = work_dir / "output"
    shutil.rmtree(output_dir, ignore_errors=True)  # a half-saved output of a killed run is never reused
    write_train_file(train, lake, work_dir / "train.jsonl")
    sft = SFTConfig(
        base_model=lake.resolve_model(training.base_model),
        train_file=str(work_dir / "train.jsonl"),
        output_dir=str(output_dir),
        method=training.method,
        max_steps=training.max_steps,
        learning_rate=training.learning_rate,
        batch_size=training.batch_size,
        seed=training.seed,
        log_every=training.log_every,
        save_every=training.save_every,
        work_dir=str(work_dir),
    )
    config_path = work_dir / "config.json"
    atomic_write_bytes(config_path, json.dumps(asdict(sft), indent=2).encode())
    if resumable := resume_info(work_dir):
        context.log.info(f"resuming checkpoint {checkpoint_id} from step {resumable['step']} in {work_dir}")
    command = training.launch_command(config_path)
    invocation = pipes_subprocess_client.run(context=context, command=command, extras=asdict(sft))
    reported = invocation.get_materialize_result()
    progress = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and m.get("event") == "progress"]

    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    metrics = {key: value.value for key, value in (reported.metadata or {}).items()}
    config_record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "partition_data_versions": partitions,
        "train_rows": train.height,
        "settings": settings,
        "sft_config": {**asdict(sft), "base_model": training.base_model},
        "launch_command": command,
        "created_at": created_at,
        "result": metrics,
    }
    atomic_write_bytes(output_dir / CHECKPOINT_CONFIG_FILE, json.dumps(config_record, indent=2).encode())
    lake.store.put_dir(checkpoint_key, output_dir)
    previous = None
    if latest and latest["checkpoint_key"] != checkpoint_key:
        previous = {key: latest[key] for key in ("checkpoint_key", "method", "base_model", "data_version")}
    record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "train_rows": train.height,
        "method": training.method,
        "base_model": training.base_model,
        "created_at": created_at,
        "settings": settings,
        "previous_checkpoint": previous,
    }
    write_latest_checkpoint(lake.store, record)
    shutil.rmtree(work_dir, ignore_errors=True)  # the checkpoint is in the lake: resume state is no longer needed
    history = lake.read_table_or_empty("finetuned_checkpoint")
    row = pl.DataFrame([{k: v for k, v in record.items() if k not in ("settings", "previous_checkpoint")}])
    history = pl.concat([history, row], how="diagonal_relaxed") if history.height else row
    lake.write_table("finetuned_checkpoint", None, history.unique("checkpoint_key", keep="last", maintain_order=True))
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            **summary,
            "reused": False,
            "previous_checkpoint_key": previous["checkpoint_key"] if previous else "",
            "launch_command": " ".join(command),
            "progress_reports": len(progress),
            "config_uri": lake.store.uri(f"{checkpoint_key}/{CHECKPOINT_CONFIG_FILE}"),
            "wall_seconds": round(timer.seconds, 3),
            "history": dg.MetadataValue.md(preview_markdown(history.tail(5))),
        },
        data_version=dg.DataVersion(data_version),
    )
