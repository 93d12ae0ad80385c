"""Supervised fine-tuning of the tiny VLM: answer-only loss, LoRA and full training, and the Pipes script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import TinyModels
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.training.sft import (
    IGNORE_INDEX,
    SFTConfig,
    TrainingTimeout,
    encode_batch,
    read_examples,
    resume_info,
    train_sft,
)

PROMPT = "Describe the image."


@pytest.fixture(scope="module")
def lora_run(tiny: TinyModels, train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    logs: list[dict] = []
    config = SFTConfig(
        base_model=str(tiny.captioner),
        train_file=str(train_file),
        output_dir=str(tmp_path_factory.mktemp("lora")),
        max_steps=15,
    )
    return train_sft(config, log=logs.append), logs


def test_labels_cover_exactly_the_answer_and_its_end_token(tiny: TinyModels, train_file: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny.captioner)
    examples = read_examples(train_file)[:2]
    batch = encode_batch(processor, examples)
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape
    for row, example in zip(labels, examples, strict=True):
        answer_ids = row[row != IGNORE_INDEX].tolist()
        assert processor.tokenizer.decode(answer_ids) == example["answer"] + "</s>"
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_lora_training_lowers_the_loss_and_logs_every_five_steps(lora_run) -> None:
    result, logs = lora_run
    assert result.steps == 15
    assert result.train_examples == 12
    assert result.final_loss < result.first_loss
    progress = [entry for entry in logs if entry["event"] == "progress"]
    assert [entry["step"] for entry in progress] == [5, 10, 15]
    assert set(progress[0]) == {
        "event", "step", "loss", "lr", "grad_norm", "answer_tokens", "tokens_per_s", "peak_memory_mb",
    }  # fmt: skip
    assert all(entry["answer_tokens"] > 0 for entry in progress)
    assert progress[0]["loss"] == round(result.first_loss, 4)
    assert [step for step, _ in result.loss_curve] == [5, 10, 15]
    assert result.tokens_per_s > 0
    assert result.peak_memory_mb > 0 and result.peak_memory_kind == "process_max_rss"
    assert result.resumed_from_step == 0 and result.world_size == 1


def test_lora_run_saves_adapter_processor_and_training_state(lora_run, tiny: TinyModels) -> None:
    result, _ = lora_run
    out = Path(result.output_dir)
    assert (out / "adapter_model.safetensors").exists()
    assert (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()
    assert (out / "processor_config.json").exists()
    state = json.loads((out / "training_state.json").read_text())
    assert {key: state[key] for key in ("steps", "train_examples", "method", "base_model")} == {
        "steps": 15,
        "train_examples": 12,
        "method": "lora",
        "base_model": str(tiny.captioner),
    }
    assert state["final_loss"] == result.final_loss
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 8
    assert "language_model" in adapter["target_modules"]


def test_base_model_with_trained_adapter_loads_and_generates(lora_run, tiny: TinyModels, train_file: Path) -> None:
    result, _ = lora_run
    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner), adapter=result.output_dir)
    image = Image.open(read_examples(train_file)[0]["image"])
    generations = vlm.generate([image, image], [PROMPT, PROMPT], max_new_tokens=8)
    assert len(generations) == 2
    assert generations[0] == generations[1]
    assert "+" in vlm.version


def test_full_training_saves_a_model_that_loads_on_its_own(tiny: TinyModels, train_file: Path, tmp_path: Path) -> None:
    config = SFTConfig(
        base_model=str(tiny.captioner),
        train_file=str(train_file),
        output_dir=str(tmp_path),
        method="full",
        max_steps=10,
        learning_rate=1e-3,
    )
    result = train_sft(config)
    assert result.final_loss < result.first_loss
    assert (tmp_path / "model.safetensors").exists()
    vlm = VisionLanguageModel.from_pretrained(str(tmp_path))
    assert len(vlm.generate([Image.new("RGB", (32, 32))], [PROMPT], max_new_tokens=4)) == 1


def test_unknown_method_is_refused(tiny: TinyModels, train_file: Path, tmp_path: Path) -> None:
    config = SFTConfig(str(tiny.captioner), str(train_file), str(tmp_path), method="qlora")
    with pytest.raises(ValueError, match="qlora"):
        train_sft(config)


def test_train_script_reports_metadata_through_dagster_pipes(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    extras = {
        "base_model": str(tiny.captioner),
        "train_file": str(train_file),
        "output_dir": str(tmp_path / "out"),
        "max_steps": 4,
        "log_every": 2,
        "not_a_config_field": "ignored",
    }
    messages: list[dict] = []

    @dg.asset
    def tuned_model(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        command = [sys.executable, "-m", "mella_assets.training.train"]
        invocation = pipes.run(command=command, context=context, extras=extras)
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = dg.materialize([tuned_model], resources={"pipes": dg.PipesSubprocessClient(env=env)})
    assert result.success
    metadata = result.asset_materializations_for_node("tuned_model")[0].metadata
    assert metadata["steps"].value == 4
    assert metadata["train_examples"].value == 12
    assert metadata["output_dir"].value == str(tmp_path / "out")
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert [m["step"] for m in messages if m["event"] == "progress"] == [2, 4]
    assert metadata["peak_memory_mb"].value > 0
    assert [step for step, _ in metadata["loss_curve"].value] == [2, 4]


def test_a_relaunch_resumes_from_the_saved_state_and_ends_where_an_uninterrupted_run_ends(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    def config(name: str, max_steps: int, work: str) -> SFTConfig:
        # Warmup then cosine decay, clipping, two accumulated micro-batches of length-grouped examples: the
        # schedule, the data order and the optimizer all have to resume where they were.
        return SFTConfig(
            base_model=str(tiny.captioner),
            train_file=str(train_file),
            output_dir=str(tmp_path / name),
            method="full",
            max_steps=max_steps,
            log_every=2,
            save_every=3,
            work_dir=str(tmp_path / work),
            batch_size=2,
            grad_accumulation_steps=2,
            warmup_steps=2,
            max_grad_norm=0.5,
            group_by_length=True,
        )

    straight_logs: list[dict] = []
    straight = train_sft(config("straight", 8, "work-straight"), log=straight_logs.append)
    # A first launch saves resume state at steps 3 and 6 and ends at 8; a resume state from step 6 is what a
    # run killed between steps 6 and 8 leaves behind (the SIGKILL case is tested through the asset).
    interrupted = config("interrupted", 8, "work-interrupted")
    logs: list[dict] = []
    train_sft(interrupted, log=logs.append)
    assert [e["step"] for e in logs if e["event"] == "checkpoint_saved"] == [3, 6]
    assert resume_info(interrupted.work_dir)["step"] == 6
    resumed_logs: list[dict] = []
    resumed = train_sft(interrupted, log=resumed_logs.append)
    assert resumed.resumed_from_step == 6
    assert resumed_logs[0] == {"event": "resumed", "step": 6}
    resumed_progress = [e for e in resumed_logs if e["event"] == "progress"]
    assert [e["step"] for e in resumed_progress] == [8]
    last = next(e for e in straight_logs if e["event"] == "progress" and e["step"] == 8)
    assert {k: resumed_progress[0][k] for k in ("loss", "lr", "grad_norm", "answer_tokens")} == pytest.approx(
        {k: last[k] for k in ("loss", "lr", "grad_norm", "answer_tokens")}, rel=1e-4
    )
    assert resumed.first_loss == straight.first_loss  # the losses before the kill travel with the state
    assert resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-4)
    assert resumed.answer_tokens == straight.answer_tokens
    straight_weights = load_file(tmp_path / "straight" / "model.safetensors")
    resumed_weights = load_file(tmp_path / "interrupted" / "model.safetensors")
    for name, weight in straight_weights.items():
        assert torch.allclose(resumed_weights[name], weight, rtol=0, atol=1e-6), name


def test_a_run_past_its_time_budget_saves_its_state_stops_with_a_clear_error_and_resumes(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    common = {
        "base_model": str(tiny.captioner),
        "train_file": str(train_file),
        "output_dir": str(tmp_path / "out"),
        "method": "full",
        "max_steps": 4,
        "log_every": 2,
        "save_every": 10,
        "work_dir": str(tmp_path / "work"),
    }
    # Loading the model alone takes longer than this budget, so the first step is already past it.
    with pytest.raises(TrainingTimeout, match=r"step 1 of 4 .* budget of 1e-06 s .* resume state saved at step 1"):
        train_sft(SFTConfig(max_seconds=1e-6, **common))
    assert resume_info(common["work_dir"])["step"] == 1
    assert not (tmp_path / "out").exists()  # nothing half-trained is published
    resumed = train_sft(SFTConfig(**common))
    assert (resumed.resumed_from_step, resumed.steps) == (1, 4)


def test_resume_state_of_other_settings_is_ignored(tiny: TinyModels, train_file: Path, tmp_path: Path) -> None:
    common = {"base_model": str(tiny.captioner), "train_file": str(train_file), "log_every": 2, "save_every": 2}
    train_sft(SFTConfig(output_dir=str(tmp_path / "a"), max_steps=3, work_dir=str(tmp_path / "w"), **common))
    other = SFTConfig(output_dir=str(tmp_path / "b"), max_steps=3, seed=1, work_dir=str(tmp_path / "w"), **common)
    assert train_sft(other).resumed_from_step == 0


def test_the_script_runs_under_torchrun_with_one_gloo_process(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    from mella_assets.resources.training import Training

    config = {
        "base_model": str(tiny.captioner),
        "train_file": str(train_file),
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "log_every": 1,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    command = Training(launcher="torchrun", nproc_per_node=1).launch_command(tmp_path / "config.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env = {key: value for key, value in env.items() if not key.startswith("DAGSTER_PIPES")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    result = lines[-1]["result"]
    assert result["world_size"] == 1 and result["steps"] == 2
    assert [e["step"] for e in lines if e.get("event") == "progress"] == [1, 2]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_launch_command_is_plain_python_or_torchrun() -> None:
    from mella_assets.resources.training import Training

    plain = Training(python="/py").launch_command("/w/config.json")
    assert plain == ["/py", "-m", "mella_assets.training.train", "--config", "/w/config.json"]
    multi = Training(python="/py", nproc_per_node=4).launch_command("/w/config.json")
    assert multi == [
        "/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "-m", "mella_assets.training.train", "--config", "/w/config.json",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="launcher"):
        Training(launcher="mpirun").launch_command("/w/config.json")
