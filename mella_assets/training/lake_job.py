"""Training jobs addressed through the lake: the one way a training process is told what to train, whether it runs
as a local subprocess or in a Kubernetes pod that holds nothing but lake credentials.

The orchestrator writes a *job* into the lake: the SFT settings plus lake keys for the train records, the
checkpoint to produce and the resume state. The training process reads the job, copies what it needs into a
local scratch folder (the lake's ETag-checked cache for images and the base model), trains with the ordinary
:func:`mella_assets.training.sft.train_sft`, keeps its resume state in the lake while it trains, and publishes
the finished checkpoint under the job's output key. Nothing in a job is a path on the orchestrator's disk.

Layout of one job (``work/training/<checkpoint id>/``)::

    job.json         the job: SFTConfig fields + lake_root, train_key, output_key, resume_key
    train.jsonl      one record per line: {"image": <lake key>, "prompt": ..., "answer": ...}
    resume/          the resume state: state.json (its step) + the trainer's state (state.pt, or TRL's trl/)
    train.pid        (local lake only) the process that trains on the job

On an S3 lake the trainer's work folder is in its scratch folder and the resume state is mirrored to ``resume/``
at every save (and pulled from it when a relaunch starts). On a local lake — a folder the trainer reaches, as the
subprocess runner's always is — the job's folder itself is the work folder: the resume state is saved straight
into the lake, with nothing to copy either way.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from mella_assets.lib.lake import TMP_PREFIX, LakeStore, atomic_write_bytes, read_location
from mella_assets.lib.model_paths import LAKE_URI_PREFIX, check_model_reference
from mella_assets.settings import load_settings
from mella_assets.training.sft import RESUME_DIR, RESUME_INFO, SFTConfig

JOB_FILE = "job.json"
TRAIN_FILE = "train.jsonl"
# Local paths a job never carries: the trainer chooses them in its own scratch folder.
LOCAL_FIELDS = ("train_file", "output_dir", "work_dir")
SCRATCH_ENV = "MELLA_TRAINING_SCRATCH"
JOBS_PREFIX = "work/training"


def job_prefix(checkpoint_id: str) -> str:
    """Lake folder of one training job."""
    return f"{JOBS_PREFIX}/{checkpoint_id}"


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
    return store.location(key)


def write_job(store: LakeStore, checkpoint_id: str, job: Mapping[str, Any], records: Iterable[Mapping]) -> str:
    """Put the train records and the job into the lake (records first: a job never names missing records); the
    resume state an earlier, killed attempt left under the job stays. Returns the job's location."""
    store.put_bytes(job["train_key"], train_records_jsonl(records))
    store.put_bytes(f"{job_prefix(checkpoint_id)}/{JOB_FILE}", json.dumps(job, indent=2).encode())
    return job_location(store, checkpoint_id)


def read_job(location: str) -> dict[str, Any]:
    """A job (or plain SFT config) JSON from a local path or an s3:// URI."""
    return json.loads(read_location(location).decode("utf-8"))


def is_lake_job(config: Mapping[str, Any]) -> bool:
    return "lake_root" in config


def missing_base_model(store: LakeStore, model: str) -> str | None:
    """Why a job's ``lake://`` base model cannot be trained on (it is not in the lake), checked before a trainer is
    launched; None when it is there, or when the model is a hub id or a path the trainer checks itself."""
    if not model.startswith(LAKE_URI_PREFIX):
        return None
    key = model.removeprefix(LAKE_URI_PREFIX)
    if next(store.list(key), None) is not None:
        return None
    return f"base model {model} is not in the lake ({store.uri(key)})"


def resume_step(store: LakeStore, job: Mapping[str, Any]) -> int | None:
    """The step of the resume state the lake holds for ``job`` (None: a fresh start)."""
    key = f"{job.get('resume_key', '')}/{RESUME_INFO}"
    if not job.get("resume_key") or not store.exists(key):
        return None
    return int(json.loads(store.get_bytes(key))["step"])


def resumable_jobs(store: LakeStore) -> dict[str, int]:
    """Checkpoint id → the step its resume state was saved at, for every job in the lake that holds one (what a
    rerun of a failed training run resumes from)."""
    found = {}
    for key in store.list(JOBS_PREFIX, RESUME_INFO):
        checkpoint_id, _, rest = key.removeprefix(f"{JOBS_PREFIX}/").partition("/")
        if rest == f"{RESUME_DIR}/{RESUME_INFO}":
            found[checkpoint_id] = int(json.loads(store.get_bytes(key))["step"])
    return found


def scratch_dir(job: Mapping[str, Any], rank: int = 0) -> Path:
    """This process's local scratch folder for ``job`` (under ``$MELLA_TRAINING_SCRATCH``, else the temp
    folder): one per job and rank, so ranks of one launch never write each other's files."""
    base = load_settings().training_scratch or Path(tempfile.gettempdir()) / "mella-training"
    job_name = job["train_key"].rsplit("/", 2)[-2]  # work/training/<checkpoint id>/train.jsonl
    return base / job_name / f"rank{rank}"


def remove_scratch(scratch: Path) -> None:
    """Remove a finished run's scratch folder (and its job's folder once no rank has one left)."""
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):  # another rank's folder is still there
        scratch.parent.rmdir()


def resolve_model(store: LakeStore, model: str) -> str:
    """``lake://models/x`` → a local copy of that lake folder; a local path must be a folder that exists (and
    lie in ``MELLA_MODEL_ROOTS`` when set); a hub id passes unchanged."""
    if model.startswith(LAKE_URI_PREFIX):
        return str(store.local_dir(model.removeprefix(LAKE_URI_PREFIX)))
    return check_model_reference(model)


def lake_work_dir(store: LakeStore, job: Mapping[str, Any]) -> Path | None:
    """The job's own folder when the lake is a folder this process reaches (a local lake): the trainer's work
    folder then, its ``resume/`` being the job's resume key, so resume state is saved straight into the lake.
    None on S3: the trainer works in its scratch folder and mirrors the resume state."""
    resume_key = job.get("resume_key", "")
    if not resume_key.endswith(f"/{RESUME_DIR}"):
        return None
    return store.direct_path(resume_key.removesuffix(f"/{RESUME_DIR}"))


def prepare_local_run(job: Mapping[str, Any], scratch: Path) -> tuple[LakeStore, SFTConfig]:
    """Copy a job's inputs from the lake into ``scratch`` and return the local SFTConfig that trains on them.

    Images and a ``lake://`` base model come through the lake's ETag-checked cache (a local lake's own files);
    resume state an earlier, killed attempt saved is found in the work folder (pulled into it from S3)."""
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
    work_dir = ""
    if job.get("resume_key"):
        in_lake = lake_work_dir(store, job)
        work_dir = str(in_lake or scratch / "work")
        if in_lake is None:
            pull_resume_state(store, job["resume_key"], Path(work_dir))
    names = {field.name for field in fields(SFTConfig)} - set(LOCAL_FIELDS)
    settings = {key: value for key, value in job.items() if key in names}
    settings["base_model"] = resolve_model(store, job["base_model"])
    settings["base_model_source"] = job["base_model"]
    config = SFTConfig(**settings, train_file=str(train_file), output_dir=str(scratch / "output"), work_dir=work_dir)
    return store, config


def pull_resume_state(store: LakeStore, resume_key: str, work_dir: Path) -> int | None:
    """Copy the lake's resume state (every file under ``resume_key``: the builtin trainer's ``state.pt``, TRL's
    checkpoint folder) into ``work_dir``; returns its step (None when the lake holds none)."""
    info_key = f"{resume_key}/{RESUME_INFO}"
    if not resume_key or not store.exists(info_key):
        return None
    folder = work_dir / RESUME_DIR
    # The state first, its summary last (as the trainer writes them): a summary always describes its state.
    state_keys = [key for key in store.list(resume_key) if key != info_key]
    for key in [*state_keys, info_key]:
        atomic_write_bytes(folder / key.removeprefix(f"{resume_key}/"), store.get_bytes(key))
    return int(json.loads((folder / RESUME_INFO).read_text())["step"])


def push_resume_state(store: LakeStore, resume_key: str, work_dir: Path) -> None:
    """Mirror the local resume state folder to the lake, state first and summary last; files the trainer has
    since removed locally (an older checkpoint it rotated out) then leave the lake too."""
    folder = work_dir / RESUME_DIR
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(TMP_PREFIX)
    )
    for name in [*(name for name in files if name != RESUME_INFO), RESUME_INFO]:
        store.put_file(f"{resume_key}/{name}", folder / name)
    for stale in set(store.list(resume_key)) - {f"{resume_key}/{name}" for name in files}:
        store.delete(stale)


def mirroring_log(
    store: LakeStore, job: Mapping[str, Any], config: SFTConfig, log: Callable[[dict], None]
) -> Callable[[dict], None]:
    """A progress callback that also mirrors the resume state to the lake each time the trainer saves it (when
    the work folder is not the lake's own)."""
    resume_key = job.get("resume_key", "")
    mirror = bool(resume_key and config.work_dir) and lake_work_dir(store, job) is None

    def on_entry(entry: dict) -> None:
        if mirror and entry.get("event") == "checkpoint_saved":
            push_resume_state(store, resume_key, Path(config.work_dir))
        log(entry)

    return on_entry


def publish_output(store: LakeStore, job: Mapping[str, Any], config: SFTConfig) -> str:
    """Put the trained output folder into the lake under the job's output key; returns its URI."""
    store.put_dir(job["output_key"], config.output_dir)
    return store.uri(job["output_key"])
