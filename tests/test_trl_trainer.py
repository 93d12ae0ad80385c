"""The TRL trainer beside the builtin loop: ``Training(trainer="trl")`` runs ``mella_assets.training.trl_train`` on
the same lake job through Pipes, and the checkpoint it publishes is registered and loads like the builtin one.

End to end on the tiny VLM on CPU: ``finetuned_checkpoint`` materialized with a lake holding a Czech
``mella_dataset`` (progress through Pipes, the checkpoint in the lake and its records, base + adapter
generating); the labels TRL trains on (the answer and its end-of-turn only, for the tiny template with
``{% generation %}`` markers and for released templates without); full fine-tuning stopped by its time budget
and resumed from TRL's own checkpoint."""

import json
import math
import os
import sys

import dagster as dg
import polars as pl
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, picture, store_image
from PIL import Image

from support.chat_templates import TEMPLATES, load_processor, with_template

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.dataset.build import build_sft_records
from mella_assets.languages import LANGUAGES
from mella_assets.lib.checkpoints import read_latest_checkpoint
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.resources import Lake, Training
from mella_assets.training.assets import finetuned_checkpoint
from mella_assets.training.lake_job import pull_resume_state, push_resume_state
from mella_assets.training.sft import (
    GENERATION_MARKER,
    IGNORE_INDEX,
    RESUME_INFO,
    SFTConfig,
    TrainingTimeout,
    read_examples,
)

BASE_MODEL = "lake://models/tiny/captioner"
PROMPT = "Describe the image."


@pytest.fixture(scope="module")
def trl_run(tiny, tmp_path_factory):
    """``finetuned_checkpoint`` trained by TRL (LoRA, 3 steps) on a local lake, through a real Dagster instance."""
    root = tmp_path_factory.mktemp("trl-lake")
    store = LakeStore(root / "lake")
    images = [store_image(store, picture(seed)) for seed in range(len(CZECH_ALTS))]
    build = build_sft_records(
        know_frame("cs", images, CZECH_ALTS), ling_frame("cs", images, CZECH_CAPTIONS), LANGUAGES["cs"]
    )
    store.write_table("mella_dataset", "cs", build.records)
    store.put_dir("models/tiny/captioner", tiny.captioner)
    training = Training(
        trainer="trl", base_model=BASE_MODEL, method="lora", max_steps=3, log_every=1, save_every=2, batch_size=4,
        scratch_root=str(root / "scratch"),
    )  # fmt: skip
    client = dg.PipesSubprocessClient(env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    resources = {"lake": Lake(root=str(store.root_uri)), "training": training, "pipes_subprocess_client": client}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([finetuned_checkpoint], resources=resources, instance=instance)
        assert result.success
        lines = [entry.user_message for entry in instance.all_logs(result.run_id)]
    (materialization,) = result.asset_materializations_for_node("finetuned_checkpoint")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    progress = [json.loads(line) for line in lines if line.startswith('{"event": "progress"')]
    train_rows = build.records.filter(pl.col("split") == "train").height
    return {"store": store, "metadata": metadata, "progress": progress, "train_rows": train_rows, "root": root}


def test_trl_trains_the_lake_job_and_streams_progress_through_pipes(trl_run):
    metadata, progress = trl_run["metadata"], trl_run["progress"]
    assert "-m mella_assets.training.trl_train --config" in metadata["launch_command"]
    assert metadata["launch_command"].startswith(sys.executable)
    # Reported by the trainer through Pipes: the builtin trainer's keys, plus which trainer it was.
    assert metadata["trainer"] == "trl" and metadata["runner"] == "subprocess"
    assert metadata["steps"] == 3 and metadata["train_examples"] == trl_run["train_rows"]
    assert [step for step, _ in metadata["loss_curve"]] == [1, 2, 3]
    assert math.isfinite(metadata["first_loss"]) and math.isfinite(metadata["final_loss"])
    assert metadata["tokens_per_s"] > 0 and metadata["peak_memory_kind"] == "process_max_rss"
    # One progress entry per step (log_every 1), each a custom message and a log line of the run.
    assert metadata["progress_reports"] == 3
    assert [entry["step"] for entry in progress] == [1, 2, 3]
    for entry in progress:
        assert {"loss", "lr", "grad_norm", "answer_tokens", "tokens_per_s", "peak_memory_mb"} <= set(entry)
        assert math.isfinite(entry["loss"]) and entry["loss"] > 0 and entry["answer_tokens"] > 0
    assert progress[0]["lr"] > 0  # the builtin loop's warmup starts above 0 (the Trainer's own schedules at 0)


def test_the_trl_checkpoint_is_published_registered_and_loads_as_base_plus_adapter(trl_run, tiny):
    store, metadata = trl_run["store"], trl_run["metadata"]
    checkpoint_key = metadata["checkpoint_key"]
    assert metadata["output_dir"] == store.uri(checkpoint_key) == metadata["checkpoint_uri"]
    assert store.exists(f"{checkpoint_key}/adapter_model.safetensors")
    assert not store.exists(f"{checkpoint_key}/model.safetensors")
    state = json.loads(store.get_bytes(f"{checkpoint_key}/training_state.json"))
    assert state["trainer"] == "trl" and state["method"] == "lora" and state["steps"] == 3
    assert state["precision"] == "fp32" and state["answer_tokens"] > 0 and state["effective_batch_size"] == 4
    # The records say which trainer made it (the trainer is part of the checkpoint's settings and identity).
    record = json.loads(store.get_bytes(f"{checkpoint_key}/mella_checkpoint.json"))
    assert record["settings"]["trainer"] == "trl" and record["result"]["trainer"] == "trl"
    latest = read_latest_checkpoint(store)
    assert latest["checkpoint_key"] == checkpoint_key and latest["settings"]["trainer"] == "trl"
    assert store.read_table("finetuned_checkpoint")["checkpoint_key"].to_list() == [checkpoint_key]
    # The job (and the TRL checkpoint saved at step 2 under its resume/) and the scratch folders are gone.
    assert list(store.list("work/training")) == []
    assert not any(path.is_file() for path in (trl_run["root"] / "scratch").rglob("*"))

    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner), adapter=str(store.path(checkpoint_key)))
    image = Image.new("RGB", (40, 32), (30, 160, 90))
    generations = vlm.generate([image], [PROMPT], max_new_tokens=6)
    assert len(generations) == 1 and "+" in vlm.version


def test_trl_labels_only_the_answer_and_its_end_token(tiny, train_file, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from mella_assets.training.trl_train import build_trainer, vision_dataset

    config = SFTConfig(base_model=str(tiny.captioner), train_file=str(train_file), output_dir=str(tmp_path / "out"))
    trainer, _ = build_trainer(config, tmp_path / "trainer")
    processor = trainer.processing_class
    assert GENERATION_MARKER in processor.chat_template  # the tiny template marks the answer; TRL does not need it
    collator = trainer.data_collator
    assert isinstance(collator, DataCollatorForVisionLanguageModeling) and collator.completion_only_loss
    assert not collator.assistant_only_loss
    examples = read_examples(train_file)[:2]
    batch = collator([trainer.train_dataset[index] for index in range(2)])
    for row, example in zip(batch["labels"], examples, strict=True):
        assert processor.tokenizer.decode(row[row != IGNORE_INDEX]).strip() == example["answer"] + "</s>"
    assert not (batch["labels"] != IGNORE_INDEX)[batch["attention_mask"] == 0].any()
    assert batch["pixel_values"].shape[0] == 2

    # Released templates have no {% generation %} markers: the completion is still the answer and its end only.
    dataset = vision_dataset(read_examples(train_file)[:2], config.max_pixels)
    for style, (template, end_of_turn) in sorted(TEMPLATES.items()):
        styled = load_processor(with_template(tiny, tmp_path / style, template))
        assert GENERATION_MARKER not in styled.chat_template
        batch = DataCollatorForVisionLanguageModeling(styled, completion_only_loss=True)([dataset[0], dataset[1]])
        for row, example in zip(batch["labels"], examples, strict=True):
            labelled = styled.tokenizer.decode(row[row != IGNORE_INDEX]).strip()
            assert labelled == example["answer"] + end_of_turn, style


def test_full_trl_training_stops_at_its_budget_and_resumes_from_its_checkpoint(tiny, train_file, tmp_path):
    from mella_assets.training.trl_train import TRL_DIR, train_trl

    settings = {
        "base_model": str(tiny.captioner), "train_file": str(train_file), "output_dir": str(tmp_path / "out"),
        "method": "full", "max_steps": 3, "log_every": 1, "save_every": 10, "work_dir": str(tmp_path / "work"),
        "learning_rate": 1e-3,
    }  # fmt: skip
    logs: list[dict] = []
    with pytest.raises(TrainingTimeout, match="resume state saved at step 1"):
        train_trl(SFTConfig(**settings, max_seconds=1e-6), log=logs.append)
    assert [entry["event"] for entry in logs] == ["progress", "checkpoint_saved"]
    info = json.loads((tmp_path / "work" / "resume" / RESUME_INFO).read_text())
    assert info["step"] == 1 and info["trainer"] == "trl"
    assert (tmp_path / "work" / "resume" / TRL_DIR / "checkpoint-1" / "optimizer.pt").exists()

    logs.clear()
    result = train_trl(SFTConfig(**settings), log=logs.append)
    assert logs[0] == {"event": "resumed", "step": 1}
    assert [entry["step"] for entry in logs if entry["event"] == "progress"] == [2, 3]
    assert result.resumed_from_step == 1 and result.steps == 3
    assert [step for step, _ in result.loss_curve] == [1, 2, 3]  # the window before the stop is kept
    assert (tmp_path / "out" / "model.safetensors").exists()
    vlm = VisionLanguageModel.from_pretrained(str(tmp_path / "out"))
    assert len(vlm.generate([Image.new("RGB", (32, 32))], [PROMPT], max_new_tokens=4)) == 1


def test_a_resume_folder_mirrors_to_the_lake_with_rotated_checkpoints_removed(tmp_path):
    store = LakeStore(tmp_path / "lake")
    work, resume_key = tmp_path / "work", "work/training/abc/resume"
    first = work / "resume" / "trl" / "checkpoint-2"
    first.mkdir(parents=True)
    (first / "optimizer.pt").write_bytes(b"2")
    (work / "resume" / RESUME_INFO).write_text(json.dumps({"step": 2}))
    push_resume_state(store, resume_key, work)
    second = work / "resume" / "trl" / "checkpoint-4"
    second.mkdir()
    (second / "optimizer.pt").write_bytes(b"4")
    (work / "resume" / RESUME_INFO).write_text(json.dumps({"step": 4}))
    for path in first.iterdir():  # the Trainer rotated the older checkpoint out
        path.unlink()
    first.rmdir()
    push_resume_state(store, resume_key, work)
    assert list(store.list(resume_key)) == [
        f"{resume_key}/{RESUME_INFO}",
        f"{resume_key}/trl/checkpoint-4/optimizer.pt",
    ]
    assert pull_resume_state(store, resume_key, tmp_path / "relaunch") == 4
    assert (tmp_path / "relaunch" / "resume" / "trl" / "checkpoint-4" / "optimizer.pt").read_bytes() == b"4"


def test_the_trainer_selects_the_module_of_both_runners_and_is_part_of_the_checkpoint_identity():
    from mella_assets.resources.training import TrainingPod

    client = dg.PipesSubprocessClient()
    job = "s3://mella/lake/work/training/abc/job.json"
    local = Training(trainer="trl", python="/py").runner_launcher(client)
    assert local.command(job) == ["/py", "-m", "mella_assets.training.trl_train", "--config", job]
    pod = Training(trainer="trl", runner="k8s", pod=TrainingPod(image="i")).runner_launcher(client)
    assert pod.command(job) == ["python", "-m", "mella_assets.training.trl_train", "--config", job]
    torchrun = Training(trainer="trl", python="/py", nproc_per_node=2).launch_command(job)
    assert torchrun[:4] == ["/py", "-m", "torch.distributed.run", "--standalone"]
    assert torchrun[-4:] == ["-m", "mella_assets.training.trl_train", "--config", job]
    assert Training(python="/py").launch_command(job)[:3] == ["/py", "-m", "mella_assets.training.train"]
    builtin, trl = Training().checkpoint_settings(), Training(trainer="trl").checkpoint_settings()
    assert builtin["trainer"] == "builtin" and trl["trainer"] == "trl" and builtin != trl
    with pytest.raises(ValueError, match="trainer must be one of"):
        Training(trainer="axolotl").runner_launcher(client)
