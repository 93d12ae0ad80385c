"""Training group: fine-tune the base MLLM on every language's train split, outside Dagster, through Pipes."""

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from mella_assets.dataset import dataset_version, training_gate_problems
from mella_assets.dataset.assets import mella_dataset
from mella_assets.lib.cache import content_key
from mella_assets.lib.checkpoints import (
    CHECKPOINT_CONFIG_FILE,
    combined_data_version,
    read_latest_checkpoint,
    write_latest_checkpoint,
)
from mella_assets.lib.lake import atomic_write_bytes
from mella_assets.lib.watchdog import stage_timeout_s
from mella_assets.metadata import StageTimer, counts_by, preview_markdown
from mella_assets.resources.lake import Lake
from mella_assets.resources.training import Training
from mella_assets.training.lake_job import LAKE_MODEL_PREFIX, build_job, job_prefix, write_job
from mella_assets.training.sft import RESUME_INFO, SFTConfig, resume_info


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


@dataclass
class TrainingRun:
    """What a launched training process gave back."""

    reported: dg.MaterializeResult
    progress: list[dict]
    command: list[str]
    sft_record: dict  # the settings it trained with, as recorded beside the checkpoint


def _progress(invocation: dg.PipesClientCompletedInvocation) -> list[dict]:
    return [m for m in invocation.get_custom_messages() if isinstance(m, dict) and m.get("event") == "progress"]


def train_in_subprocess(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    train: pl.DataFrame,
    checkpoint_id: str,
    client: dg.PipesSubprocessClient,
) -> TrainingRun:
    """Runner 'subprocess': the script runs on this machine on local files (the lake's own, or its cache)."""
    work_dir = training.work_dir(lake.store.local_root, checkpoint_id)
    output_dir = work_dir / "output"
    shutil.rmtree(output_dir, ignore_errors=True)  # a half-saved output of a killed run is never reused
    write_train_file(train, lake, work_dir / "train.jsonl")
    sft = SFTConfig(
        base_model=lake.resolve_model(training.base_model),
        train_file=str(work_dir / "train.jsonl"),
        output_dir=str(output_dir),
        work_dir=str(work_dir),
        **sft_settings(training),
    )
    config_path = work_dir / "config.json"
    atomic_write_bytes(config_path, json.dumps(asdict(sft), indent=2).encode())
    if resumable := resume_info(work_dir):
        context.log.info(f"resuming checkpoint {checkpoint_id} from step {resumable['step']} in {work_dir}")
    command = training.launch_command(config_path)
    invocation = client.run(context=context, command=command, extras=asdict(sft))
    sft_record = {**asdict(sft), "base_model": training.base_model}
    return TrainingRun(invocation.get_materialize_result(), _progress(invocation), command, sft_record)


def train_in_pod(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    train: pl.DataFrame,
    checkpoint_id: str,
    checkpoint_key: str,
) -> TrainingRun:
    """Runner 'k8s': a pod that holds only lake credentials trains on a lake job (inputs, resume state and the
    checkpoint all addressed by lake keys) and reports through Pipes on its log stream."""
    store = lake.store
    model_key = training.base_model.removeprefix(LAKE_MODEL_PREFIX)
    if training.base_model.startswith(LAKE_MODEL_PREFIX) and next(store.list(model_key), None) is None:
        # Fail here, not after a GPU node was scheduled and the pod pulled its image.
        raise dg.Failure(f"base model {training.base_model} is not in the lake ({store.uri(model_key)})")
    job = build_job(store, checkpoint_id, checkpoint_key, {"base_model": training.base_model, **sft_settings(training)})
    if store.exists(f"{job['resume_key']}/{RESUME_INFO}"):
        context.log.info(f"resuming checkpoint {checkpoint_id} from the resume state in {store.uri(job['resume_key'])}")
    location = write_job(store, checkpoint_id, job, train.iter_rows(named=True))
    command = training.launch_command(location, python=training.pod.python)
    arguments = training.k8s_run_arguments(command, checkpoint_id)
    context.log.info(f"training pod: image {arguments['image']}, {training.pod.gpus} GPU(s), job {location}")
    invocation = training.pipes_k8s_client().run(context=context, extras=job, **arguments)
    return TrainingRun(invocation.get_materialize_result(), _progress(invocation), command, job)


def sft_settings(training: Training) -> dict:
    """The SFTConfig fields the training resource sets (every other field keeps its SFTConfig default)."""
    return {
        "method": training.method,
        "max_steps": training.max_steps,
        "learning_rate": training.learning_rate,
        "batch_size": training.batch_size,
        "seed": training.seed,
        "log_every": training.log_every,
        "save_every": training.save_every,
        # The stage watchdog's budget (lib/watchdog.py), enforced inside the training loop of the other process.
        "max_seconds": stage_timeout_s("finetuned_checkpoint")[0],
    }


@dg.asset(group_name="training", deps=[mella_dataset], kinds={"pytorch"})
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """LoRA (or full) SFT of the base MLLM on the train split of all languages, run as a separate process via
    Dagster Pipes (`torchrun` when configured): a local subprocess, or with ``training.runner`` 'k8s' a GPU pod
    that reads a lake job and writes the checkpoint to the lake itself. The checkpoint lands in
    ``checkpoints/<id>/`` with its config and data version (a hash of the language partitions' versions); the
    same data and settings reuse it. Resume state is saved every ``save_every`` steps (mirrored to the lake from
    a pod), so a killed run rematerialized with the same data resumes."""
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

    training.check_runner()
    if training.runner == "k8s":
        run = train_in_pod(context, lake, training, train, checkpoint_id, checkpoint_key)
    else:
        run = train_in_subprocess(context, lake, training, train, checkpoint_id, pipes_subprocess_client)
    reported, progress, command, sft_record = run.reported, run.progress, run.command, run.sft_record

    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    metrics = {key: value.value for key, value in (reported.metadata or {}).items()}
    config_record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "partition_data_versions": partitions,
        "train_rows": train.height,
        "settings": settings,
        "sft_config": sft_record,
        "launch_command": command,
        "created_at": created_at,
        "result": metrics,
    }
    if training.runner == "k8s":  # the pod published the checkpoint; its record joins it
        lake.store.put_bytes(f"{checkpoint_key}/{CHECKPOINT_CONFIG_FILE}", json.dumps(config_record, indent=2).encode())
    else:
        output_dir = Path(sft_record["output_dir"])
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
    # The checkpoint is in the lake: resume state and the job's inputs are no longer needed.
    if training.runner == "k8s":
        lake.store.delete(job_prefix(checkpoint_id))
    else:
        shutil.rmtree(sft_record["work_dir"], ignore_errors=True)
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
            "runner": training.runner,
            "progress_reports": len(progress),
            "config_uri": lake.store.uri(f"{checkpoint_key}/{CHECKPOINT_CONFIG_FILE}"),
            "wall_seconds": round(timer.seconds, 3),
            "history": dg.MetadataValue.md(preview_markdown(history.tail(5))),
        },
        data_version=dg.DataVersion(data_version),
    )
