"""Training group: fine-tune the base MLLM on every language's train split, outside Dagster, through Pipes.

One path for every runner: the asset writes a lake job (``lake_job.py``: job.json + train.jsonl under
``work/training/<id>/``), a launcher starts ``python -m mella_assets.training.train --config <job>`` on it — a
local subprocess or a Kubernetes pod, the only difference between runners (``Training.runner_launcher``) — and the
trainer publishes the checkpoint to ``checkpoints/<id>/`` itself; the asset then adds its record beside it.
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from mella_assets.dataset import cross_language_problems, dataset_version, training_gate_problems
from mella_assets.lib.cache import content_key
from mella_assets.lib.checkpoints import (
    CHECKPOINT_CONFIG_FILE,
    combined_data_version,
    read_latest_checkpoint,
    write_latest_checkpoint,
)
from mella_assets.lib.lake import LakeStore
from mella_assets.metadata import StageTimer, counts_by, preview_markdown
from mella_assets.resources.lake import Lake
from mella_assets.resources.training import Training
from mella_assets.specs import stage_specs, table_result
from mella_assets.tables import FINETUNED_CHECKPOINT, MELLA_DATASET
from mella_assets.training.lake_job import build_job, job_prefix, missing_base_model, resume_step, write_job


def check_training_gate(records: pl.DataFrame, store: LakeStore) -> None:
    """The dataset's blocking checks guard runs that materialize mella_dataset; training_job reads the lake as it
    is, so the same conditions are verified here before any GPU time is spent: each language's own, and no test
    image of any language (nor a near duplicate) in any language's train split (out of core, over all
    partitions), since the checkpoint is multilingual."""
    if records.is_empty():
        raise dg.Failure("mella_dataset has no rows: materialize the language pipeline first")
    problems = {
        language: found
        for (language,), frame in records.group_by("language", maintain_order=True)
        if (found := training_gate_problems(frame, language, store.exists))
    }
    for language, found in cross_language_problems(store).items():
        problems[language] = [*problems.get(language, []), *found]
    if problems:
        raise dg.Failure(
            "mella_dataset fails its blocking checks; fix the data and rematerialize it before training",
            metadata={"problems": dg.MetadataValue.json(problems)},
        )


def partition_data_versions(train: pl.DataFrame) -> dict[str, str]:
    """The data version of each language partition's train rows."""
    return {
        str(language): dataset_version(group) for (language,), group in train.group_by("language", maintain_order=True)
    }


def progress_reports(invocation: dg.PipesClientCompletedInvocation) -> list[dict]:
    """The ``progress`` entries the trainer reported through Pipes."""
    return [m for m in invocation.get_custom_messages() if isinstance(m, dict) and m.get("event") == "progress"]


def with_checkpoint(history: pl.DataFrame, record: dict[str, Any]) -> pl.DataFrame:
    """The ``finetuned_checkpoint`` table with the checkpoint ``record`` added (one row per checkpoint key)."""
    row = pl.DataFrame([{column: record[column] for column in FINETUNED_CHECKPOINT.columns}])
    history = pl.concat([history, row], how="diagonal_relaxed") if history.height else row
    return history.unique("checkpoint_key", keep="last", maintain_order=True)


@dg.multi_asset(
    name="finetuned_checkpoint", specs=stage_specs("finetuned_checkpoint", deps=[MELLA_DATASET]), pool="gpu"
)
def finetuned_checkpoint(
    context: dg.AssetExecutionContext,
    lake: Lake,
    training: Training,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """LoRA (or full) SFT of the base MLLM on the train split of all languages, run as a separate process via
    Dagster Pipes (``torchrun`` when configured) on a lake job: a local subprocess, or with ``training.runner``
    'k8s' a GPU pod. The checkpoint lands in ``checkpoints/<id>/`` with its config and data version (a hash of the
    language partitions' versions); the same data and settings reuse it. Resume state is saved in the lake job
    every ``save_every`` steps, so a killed run rematerialized with the same data resumes."""
    timer = StageTimer()
    store = lake.store
    records = lake.read_all_languages(MELLA_DATASET)
    check_training_gate(records, store)
    train = records.filter(pl.col("split") == "train")
    partitions = partition_data_versions(train)
    data_version = combined_data_version(partitions)
    settings = training.checkpoint_settings()
    checkpoint_id = content_key(data_version, settings)[:16]
    checkpoint_key = f"checkpoints/{checkpoint_id}"
    latest = read_latest_checkpoint(store)
    summary = {
        "data_version": data_version,
        "partition_data_versions": dg.MetadataValue.json(partitions),
        "train_rows": train.height,
        "train_rows_by_language": dg.MetadataValue.json(counts_by(train, "language")),
        "checkpoint_key": checkpoint_key,
        "checkpoint_uri": lake.uri(checkpoint_key),
    }
    if latest and latest["checkpoint_key"] == checkpoint_key and lake.exists(checkpoint_key):
        context.log.info(f"checkpoint {checkpoint_id} already trained on data version {data_version}: reused")
        history = lake.read_or_empty(FINETUNED_CHECKPOINT)
        reused = {**summary, "reused": True, "wall_seconds": round(timer.seconds, 3)}
        return _with_data_version(table_result(FINETUNED_CHECKPOINT, history, reused), data_version)

    launcher = training.runner_launcher(pipes_subprocess_client)
    if problem := missing_base_model(store, training.base_model):
        raise dg.Failure(problem)  # here, not after a GPU node was scheduled and a pod pulled its image
    launcher.check_base_model(training.base_model)
    job = build_job(store, checkpoint_id, checkpoint_key, training.job_settings())
    if (step := resume_step(store, job)) is not None:
        context.log.info(f"resuming checkpoint {checkpoint_id} from step {step} ({lake.uri(job['resume_key'])})")
    location = write_job(store, checkpoint_id, job, train.iter_rows(named=True))
    invocation = launcher.launch(context, job, location, checkpoint_id)
    reported, progress, command = (
        invocation.get_materialize_result(),
        progress_reports(invocation),
        launcher.command(location),
    )

    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    config_record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "partition_data_versions": partitions,
        "train_rows": train.height,
        "settings": settings,
        "sft_config": job,
        "launch_command": command,
        "created_at": created_at,
        "result": {key: value.value for key, value in (reported.metadata or {}).items()},
    }
    # The trainer published the checkpoint; its record joins it.
    lake.put_bytes(f"{checkpoint_key}/{CHECKPOINT_CONFIG_FILE}", json.dumps(config_record, indent=2).encode())
    previous = None
    if latest and latest["checkpoint_key"] != checkpoint_key:
        previous = {key: latest[key] for key in ("checkpoint_key", "method", "base_model", "data_version")}
    record = {
        "checkpoint_key": checkpoint_key,
        "data_version": data_version,
        "train_rows": train.height,
        "method": training.method,
        "trainer": training.trainer,
        "base_model": training.base_model,
        "created_at": created_at,
        "settings": settings,
        "previous_checkpoint": previous,
    }
    write_latest_checkpoint(store, record)
    lake.delete(job_prefix(checkpoint_id))  # the checkpoint is in the lake: the job and its resume state are done
    history = with_checkpoint(lake.read_or_empty(FINETUNED_CHECKPOINT), record)
    lake.write(FINETUNED_CHECKPOINT, None, history)
    trained = table_result(
        FINETUNED_CHECKPOINT,
        history,
        {
            **(reported.metadata or {}),
            **summary,
            "reused": False,
            "previous_checkpoint_key": previous["checkpoint_key"] if previous else "",
            "launch_command": " ".join(command),
            "runner": launcher.runner,
            "progress_reports": len(progress),
            "config_uri": lake.uri(f"{checkpoint_key}/{CHECKPOINT_CONFIG_FILE}"),
            "wall_seconds": round(timer.seconds, 3),
            "history": dg.MetadataValue.md(preview_markdown(history.tail(5))),
        },
    )
    return _with_data_version(trained, data_version)


def _with_data_version(result: dg.MaterializeResult, data_version: str) -> dg.MaterializeResult:
    """The checkpoint's data version (the hash of the language partitions it trained on) on its materialization."""
    return dg.MaterializeResult(
        asset_key=result.asset_key, metadata=result.metadata, data_version=dg.DataVersion(data_version)
    )
