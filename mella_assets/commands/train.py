"""`mella train`: fine-tune an image-text-to-text checkpoint on an export folder, outside Dagster (as
``llamafactory-cli train`` does on its own data folder).

``--data`` is an export folder of the ``mella_export`` asset (its ``data.parquet``; images relative to the folder,
or to ``--media-dir`` for an export made without copying images) or a JSONL of ``{"image", "prompt", "answer"}``
records (images relative to the file's folder). Training is the same code the ``finetuned_checkpoint`` asset's
process runs (``mella_assets.training.train``; with ``--trainer trl``, ``mella_assets.training.trl_train``): every
``SFTConfig`` setting is a flag, one JSON line is printed per logged step (``step``, ``loss``, ``tokens_per_s``,
``peak_memory_mb``, ``answer_tokens``, …) and a ``result`` line at the end. Resume state is kept in
``<output>/.resume`` while it trains: the same command run again after a kill continues where it stopped; a finished
run removes it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from mella_assets.lib.progress import terminal_bar

# Fields the command sets itself (the data and output flags), not from a flag of the same name.
COMMAND_FIELDS = ("base_model", "train_file", "output_dir", "work_dir", "base_model_source")
RESUME_FOLDER = ".resume"
TRAINERS = ("builtin", "trl")
TRAIN_RECORDS = "train.jsonl"


class TrainingDataError(ValueError):
    """The data folder or file holds nothing to train on, or names images that are not there."""


def _resolved(records: list[dict[str, str]], media_dir: Path) -> list[dict[str, str]]:
    examples = [{**record, "image": str(media_dir / record["image"])} for record in records]
    missing = [example["image"] for example in examples if not Path(example["image"]).is_file()]
    if missing:
        raise TrainingDataError(
            f"{len(missing)} of {len(examples)} images are missing, e.g. {missing[:3]} "
            "(an export made without copying images needs --media-dir LAKE_ROOT)"
        )
    return examples


def training_examples(
    data: str | Path, split: str = "train", languages: list[str] | None = None, media_dir: str | Path | None = None
) -> list[dict[str, str]]:
    """The ``{"image": absolute path, "prompt", "answer"}`` records to train on from an export folder (rows of
    ``split`` and ``languages``) or a JSONL file."""
    import polars as pl

    path = Path(data)
    if path.is_file():
        from mella_assets.training.sft import read_examples

        records = read_examples(path)
        return _resolved(records, Path(media_dir) if media_dir else path.parent)
    parquet = path / "data.parquet"
    if not parquet.is_file():
        raise TrainingDataError(f"{path} is not an export folder (no data.parquet) nor a JSONL file")
    frame = pl.read_parquet(parquet, columns=["split", "language", "prompt", "text", "image_path"])
    frame = frame.filter(pl.col("split") == split)
    if languages:
        frame = frame.filter(pl.col("language").is_in(languages))
    if frame.is_empty():
        chosen = f" in {', '.join(languages)}" if languages else ""
        raise TrainingDataError(f"{parquet} has no {split!r} rows{chosen}")
    records = [
        {"image": row["image_path"], "prompt": row["prompt"], "answer": row["text"]}
        for row in frame.iter_rows(named=True)
    ]
    return _resolved(records, Path(media_dir) if media_dir else path)


def _setting_fields() -> list:
    from mella_assets.training.sft import SFTConfig

    return [f for f in fields(SFTConfig) if f.name not in COMMAND_FIELDS and f.default is not MISSING]


def _setting_choices() -> dict[str, tuple[str, ...]]:
    from mella_assets.training.sft import LORA_SCOPES, LR_SCHEDULERS, METHODS, PRECISIONS

    return {"method": METHODS, "lr_scheduler": LR_SCHEDULERS, "precision": PRECISIONS, "lora_scope": LORA_SCOPES}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per SFTConfig setting (``max_steps`` → ``--max-steps``), typed by its default; defaults are
    SFTConfig's, so the command and the asset's trainer start from the same values."""
    group = parser.add_argument_group("training settings (SFTConfig)")
    choices_by_name = _setting_choices()
    for setting in _setting_fields():
        flag = "--" + setting.name.replace("_", "-")
        default = setting.default
        if setting.name in choices_by_name:
            group.add_argument(flag, choices=choices_by_name[setting.name], default=None, help=f"(default {default})")
        elif isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {default})")
        else:
            kind = type(default) if default is not None else str
            metavar = kind.__name__.upper()
            group.add_argument(flag, type=kind, default=None, metavar=metavar, help=f"(default {default})")


def build_config(args: argparse.Namespace, train_file: Path) -> Any:
    """The SFTConfig of the command line: the flags given, SFTConfig's defaults for the rest."""
    from mella_assets.training.sft import SFTConfig

    given = {s.name: getattr(args, s.name) for s in _setting_fields() if getattr(args, s.name) is not None}
    output = Path(args.output)
    return SFTConfig(
        base_model=args.base_model,
        train_file=str(train_file),
        output_dir=str(output),
        work_dir=str(output / RESUME_FOLDER),
        **given,
    )


def trainer_function(trainer: str):
    """The function that trains an SFTConfig: the builtin loop, or TRL's SFTTrainer (the `trl` extra)."""
    if trainer == "trl":
        from mella_assets.training.trl_train import train_trl

        return train_trl
    from mella_assets.training.sft import train_sft

    return train_sft


def run(args: argparse.Namespace) -> int:
    from mella_assets.training.sft import NoAnswerTokens, TrainingTimeout
    from mella_assets.training.train import train_from_mapping

    languages = [code.strip() for code in args.languages.split(",")] if args.languages else None
    try:
        examples = training_examples(args.data, args.split, languages, args.media_dir)
    except (OSError, ValueError) as error:  # the data is missing or unusable: a failure (2 is for bad flags)
        print(f"error: {error}", file=sys.stderr)
        return 1
    output = Path(args.output)
    resume = output / RESUME_FOLDER
    resume.mkdir(parents=True, exist_ok=True)
    train_file = resume / TRAIN_RECORDS
    train_file.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    try:
        config = build_config(args, train_file)
        with terminal_bar(config.max_steps, "training steps", "step") as bar:
            result, location = train_from_mapping(
                asdict(config), log=_printing_to_stdout(bar), train=trainer_function(args.trainer)
            )
    except NoAnswerTokens as error:  # an example the template gives no answer token: the data's fault
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a setting out of range (a flag's value)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingTimeout as error:  # its resume state is saved: the same command continues
        print(f"error: {error}; run the same command again to continue", file=sys.stderr)
        return 1
    shutil.rmtree(resume)  # finished: nothing left to resume
    print(json.dumps({"result": {**asdict(result), "output_dir": location}}), flush=True)
    return 0


def _printing_to_stdout(bar: Any) -> Any:
    """The trainer's log: each entry as a JSON line on stdout; a progress entry also moves the terminal's bar (on
    stderr, only at a terminal) to its step, with the window's loss."""
    from tqdm import tqdm

    def log(entry: dict) -> None:
        with tqdm.external_write_mode(file=sys.stdout):  # the line prints above the bar, not through it
            print(json.dumps(entry), flush=True)
        if entry.get("event") == "progress" and isinstance(entry.get("step"), int):
            bar.update(entry["step"] - bar.n)  # a resumed run starts where it stopped
            if isinstance(entry.get("loss"), float):
                bar.set_postfix(loss=f"{entry['loss']:.3f}", refresh=False)

    return log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on an export folder (outside Dagster); one JSON line per logged step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base-model", required=True, help="hub id or local folder of the checkpoint to fine-tune")
    parser.add_argument("--data", required=True, help="export folder (data.parquet) or JSONL of image/prompt/answer")
    parser.add_argument("--output", required=True, help="folder of the fine-tuned model (adapter for LoRA)")
    parser.add_argument(
        "--trainer", choices=TRAINERS, default="builtin", help="the builtin loop or TRL's SFTTrainer (the trl extra)"
    )
    parser.add_argument("--split", default="train", help="export rows of this split (default train)")
    parser.add_argument("--languages", help="comma-separated codes of the export rows to train on (default all)")
    parser.add_argument("--media-dir", help="folder the export's image paths are relative to (default: --data)")
    add_setting_flags(parser)
    parser.set_defaults(func=run)
