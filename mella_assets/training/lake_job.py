"""Training jobs addressed through the lake, so a process holding only lake credentials (a Kubernetes pod) runs them.

The orchestrator writes a *job* into the lake: the SFT settings plus lake keys for the train records, the
checkpoint to produce and the resume state. The training process reads the job, copies what it needs into a
local scratch folder (the lake's ETag-checked cache for images and the base model), trains with the ordinary
:func:`mella_assets.training.sft.train_sft`, mirrors its resume state back to the lake while it trains, and publishes
the finished checkpoint under the job's output key. Nothing in a job is a path on the orchestrator's disk.

Layout of one job (``work/training/<checkpoint id>/``)::

    job.json         the job: SFTConfig fields + lake_root, train_key, output_key, resume_key
    train.jsonl      one record per line: {"image": <lake key>, "prompt": ..., "answer": ...}
    resume/          the resume state (state.pt, state.json), mirrored from the trainer's work folder
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from mella_assets.lib.lake import LakeStore, atomic_write_bytes
from mella_assets.training.sft import RESUME_DIR, RESUME_INFO, RESUME_STATE, SFTConfig

LAKE_MODEL_PREFIX = "lake://"
JOB_FILE = "job.json"
TRAIN_FILE = "train.jsonl"
# Local paths a job never carries: the trainer chooses them in its own scratch folder.
LOCAL_FIELDS = ("train_file", "output_dir", "work_dir")
SCRATCH_ENV = "MELLA_TRAINING_SCRATCH"


def job_prefix(checkpoint_id: str) -> str:
    """Lake folder of one training job."""
    return f"work/training/{checkpoint_id}"


def train_records_jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Train records as the lake job holds them: the image as its lake key, never a local path."""
    lines = [
        json.dumps({"image": row["image_key"], "prompt": row["prompt"], "answer": row["text"]}, ensure_ascii=False)
        for row in records
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def build_job(store: LakeStore, checkpoint_id: str, output_key: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The job of one checkpoint: ``settings`` (SFTConfig fields; local path fields are refused) plus lake keys."""
    names = {field.name for field in fields(SFTConfig)}
    unknown = set(settings) - names
    local = set(settings) & set(LOCAL_FIELDS)
    if unknown or local:
        raise ValueError(f"job settings must be SFTConfig fields without local paths: {sorted(unknown | local)}")
    prefix = job_prefix(checkpoint_id)
    return {
        **settings,
        "lake_root": store.root_uri,
        "train_key": f"{prefix}/{TRAIN_FILE}",
        "output_key": output_key,
        "resume_key": f"{prefix}/{RESUME_DIR}",
    }


def job_location(store: LakeStore, checkpoint_id: str) -> str:
    """Where the training process finds the job: an s3:// URI, or a path in a local (shared-volume) lake."""
    key = f"{job_prefix(checkpoint_id)}/{JOB_FILE}"
    return store.uri(key) if store.is_s3 else str(store.path(key))


def write_job(store: LakeStore, checkpoint_id: str, job: Mapping[str, Any], records: Iterable[Mapping]) -> str:
    """Put the train records and the job into the lake (records first: a job never names missing records)."""
    store.put_bytes(job["train_key"], train_records_jsonl(records))
    store.put_bytes(f"{job_prefix(checkpoint_id)}/{JOB_FILE}", json.dumps(job, indent=2).encode())
    return job_location(store, checkpoint_id)


def read_job(location: str) -> dict[str, Any]:
    """A job (or plain SFT config) JSON from a local path or an s3:// URI."""
    if location.startswith("s3://"):
        from mella_assets.lib.lake import s3_filesystem

        return json.loads(s3_filesystem().cat_file(location.removeprefix("s3://")))
    return json.loads(Path(location).read_text(encoding="utf-8"))


def is_lake_job(config: Mapping[str, Any]) -> bool:
    return "lake_root" in config


def scratch_dir(job: Mapping[str, Any], rank: int = 0) -> Path:
    """This process's local scratch folder for ``job`` (under ``$MELLA_TRAINING_SCRATCH``, else the temp
    folder): one per job and rank, so ranks of one launch never write each other's files."""
    base = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "mella-training")
    job_name = job["train_key"].rsplit("/", 2)[-2]  # work/training/<checkpoint id>/train.jsonl
    return base / job_name / f"rank{rank}"


def resolve_model(store: LakeStore, model: str) -> str:
    """``lake://models/x`` → a local copy of that lake folder; hub ids and paths pass unchanged."""
    if model.startswith(LAKE_MODEL_PREFIX):
        return str(store.local_dir(model.removeprefix(LAKE_MODEL_PREFIX)))
    return model


def prepare_local_run(job: Mapping[str, Any], scratch: Path) -> tuple[LakeStore, SFTConfig]:
    """Copy a job's inputs from the lake into ``scratch`` and return the local SFTConfig that trains on them.

    Images and a ``lake://`` base model come through the lake's ETag-checked cache; resume state saved by an
    earlier, killed attempt is pulled into the local work folder so the run continues from it."""
    store = LakeStore(job["lake_root"])
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch / "output", ignore_errors=True)  # a half-saved output of a killed attempt is never reused
    lines = store.get_bytes(job["train_key"]).decode("utf-8").splitlines()
    local_lines = []
    for line in filter(str.strip, lines):
        record = json.loads(line)
        record["image"] = str(store.local_path(record["image"]))
        local_lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    train_file = scratch / TRAIN_FILE
    atomic_write_bytes(train_file, "".join(local_lines).encode("utf-8"))
    work_dir = scratch / "work"
    pull_resume_state(store, job.get("resume_key", ""), work_dir)
    names = {field.name for field in fields(SFTConfig)} - set(LOCAL_FIELDS)
    settings = {key: value for key, value in job.items() if key in names}
    settings["base_model"] = resolve_model(store, job["base_model"])
    settings["base_model_source"] = job["base_model"]
    config = SFTConfig(
        **settings,
        train_file=str(train_file),
        output_dir=str(scratch / "output"),
        work_dir=str(work_dir) if job.get("resume_key") else "",
    )
    return store, config


def pull_resume_state(store: LakeStore, resume_key: str, work_dir: Path) -> int | None:
    """Copy the lake's resume state into ``work_dir``; returns its step (None when the lake holds none)."""
    if not resume_key or not store.exists(f"{resume_key}/{RESUME_INFO}"):
        return None
    folder = work_dir / RESUME_DIR
    # The state first, its summary last (as the trainer writes them): a summary always describes its state.
    for name in (RESUME_STATE, RESUME_INFO):
        atomic_write_bytes(folder / name, store.get_bytes(f"{resume_key}/{name}"))
    return int(json.loads((folder / RESUME_INFO).read_text())["step"])


def push_resume_state(store: LakeStore, resume_key: str, work_dir: Path) -> None:
    """Mirror the local resume state to the lake, state first and summary last."""
    folder = work_dir / RESUME_DIR
    for name in (RESUME_STATE, RESUME_INFO):
        store.put_bytes(f"{resume_key}/{name}", (folder / name).read_bytes())


def mirroring_log(
    store: LakeStore, job: Mapping[str, Any], config: SFTConfig, log: Callable[[dict], None]
) -> Callable[[dict], None]:
    """A progress callback that also mirrors the resume state to the lake each time the trainer saves it."""
    resume_key = job.get("resume_key", "")

    def on_entry(entry: dict) -> None:
        if entry.get("event") == "checkpoint_saved" and resume_key and config.work_dir:
            push_resume_state(store, resume_key, Path(config.work_dir))
        log(entry)

    return on_entry


def publish_output(store: LakeStore, job: Mapping[str, Any], config: SFTConfig) -> str:
    """Put the trained output folder into the lake under the job's output key; returns its URI."""
    store.put_dir(job["output_key"], config.output_dir)
    return store.uri(job["output_key"])
