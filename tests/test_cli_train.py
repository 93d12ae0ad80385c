"""`mella train` on a real export folder (written by the export code from records the dataset code built), through
the command line, on copies of the tiny VLM whose chat templates have no generation markers (as released)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, picture, store_image

from mella_assets.cli import main
from mella_assets.dataset.build import build_sft_records
from mella_assets.dataset.export import write_export
from mella_assets.demo.tiny_models import TinyModels
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore
from support.chat_templates import TEMPLATES, with_template
from support.terminal import mella

STEPS, LOG_EVERY = 12, 4


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """An export of 12 Czech images (D_know alt texts and D_ling translations) with the images copied into it."""
    lake = tmp_path_factory.mktemp("lake")
    store = LakeStore(lake)
    images = [store_image(store, picture(seed, size=(96, 72))) for seed in range(12)]
    records = build_sft_records(
        know_frame("cs", images, CZECH_ALTS), ling_frame("cs", images, CZECH_CAPTIONS), LANGUAGES["cs"]
    ).records
    write_export(store, "exports/v1", records, "v1")
    return lake / "exports" / "v1"


def run_train(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["train", *args])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


@pytest.mark.parametrize("style", sorted(TEMPLATES))
def test_mella_train_on_a_template_without_markers_has_answer_tokens_and_a_finite_falling_loss(
    style, export: Path, tiny: TinyModels, tmp_path: Path, capsys
) -> None:
    model = with_template(tiny, tmp_path / style, TEMPLATES[style][0])
    output = tmp_path / "out"
    code, lines, err = run_train(
        capsys,
        *("--base-model", str(model), "--data", str(export), "--output", str(output)),
        *("--method", "full", "--max-steps", str(STEPS), "--log-every", str(LOG_EVERY), "--batch-size", "4"),
    )
    assert code == 0, err
    progress = [line for line in lines if line.get("event") == "progress"]
    assert [entry["step"] for entry in progress] == [4, 8, 12]
    for entry in progress:
        assert {"step", "loss", "tokens_per_s", "peak_memory_mb", "answer_tokens"} <= entry.keys()
        assert math.isfinite(entry["loss"]) and entry["answer_tokens"] > 0 and entry["tokens_per_s"] > 0
    (result,) = [line["result"] for line in lines if "result" in line]
    assert math.isfinite(result["first_loss"]) and result["final_loss"] < result["first_loss"]
    assert result["train_examples"] == len(json.loads((export / "sharegpt_train.json").read_text()))
    assert (output / "config.json").exists() and not (output / ".resume").exists()


def test_lora_run_through_the_console_script_saves_an_adapter(export: Path, tiny: TinyModels, tmp_path: Path) -> None:
    output = tmp_path / "adapter"
    command = [sys.executable, "-m", "mella_assets.cli", "train", "--base-model", str(tiny.captioner)]
    command += ["--data", str(export), "--output", str(output), "--max-steps", "2", "--log-every", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["step"] for line in lines if line.get("event") == "progress"] == [1, 2]
    assert (output / "adapter_config.json").exists() and (output / "training_state.json").exists()
    assert lines[-1]["result"]["steps"] == 2


def test_a_run_stopped_by_its_time_budget_continues_when_the_same_command_runs_again(
    export: Path, tiny: TinyModels, tmp_path: Path, capsys
) -> None:
    args = ["--base-model", str(tiny.captioner), "--data", str(export), "--output", str(tmp_path / "out")]
    args += ["--max-steps", "3", "--log-every", "1", "--batch-size", "2"]
    code, lines, err = run_train(capsys, *args, "--max-seconds", "0.001")
    assert code == 1 and "training stopped at step 1 of 3" in err and "run the same command again" in err
    assert [line["step"] for line in lines if line.get("event") == "checkpoint_saved"] == [1]
    code, lines, err = run_train(capsys, *args)
    assert code == 0, err
    assert {"event": "resumed", "step": 1} in lines
    assert [line["step"] for line in lines if line.get("event") == "progress"] == [2, 3]
    assert lines[-1]["result"]["resumed_from_step"] == 1


def test_bad_data_is_a_clear_error(export: Path, tiny: TinyModels, tmp_path: Path, capsys) -> None:
    base = ("--base-model", str(tiny.captioner), "--output", str(tmp_path / "out"))
    code, _, err = run_train(capsys, *base, "--data", str(tmp_path))
    assert code == 1 and "is not an export folder (no data.parquet)" in err  # bad data: 1 (2 is for bad flags)
    code, _, err = run_train(capsys, *base, "--data", str(export), "--languages", "vi")
    assert code == 1 and "has no 'train' rows in vi" in err
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"image": "gone.jpg", "prompt": "p", "answer": "a"}) + "\n")
    code, _, err = run_train(capsys, *base, "--data", str(records))
    assert code == 1 and "1 of 1 images are missing" in err


def test_mella_train_shows_a_bar_over_the_steps_on_a_terminal_only(export: Path, tiny: TinyModels, tmp_path: Path):
    args = ["train", "--base-model", str(tiny.captioner), "--data", str(export), "--method", "full"]
    args += ["--max-steps", "4", "--log-every", "2"]
    code, shown = mella([*args, "--output", str(tmp_path / "a")], terminal=True, timeout_s=300)
    assert code == 0, shown
    assert "training steps:" in shown and "2/4 [" in shown and "loss=" in shown, shown
    code, piped = mella([*args, "--output", str(tmp_path / "b")], terminal=False, timeout_s=300)
    assert code == 0, piped
    assert "training steps" not in piped and "\r" not in piped
