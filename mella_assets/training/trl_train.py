"""The SFT training process on TRL's ``SFTTrainer``: the same lake job, Pipes protocol and checkpoint layout as
``mella_assets.training.train`` (the builtin loop), selected with ``Training.trainer = "trl"``.

Launched as ``python -m mella_assets.training.trl_train --config <job>`` (or under ``torchrun``, where TRL and
accelerate run DDP themselves). ``train.main`` does the rest of the protocol: it reads the job, copies its inputs
into scratch (``lake_job.prepare_local_run``), reports progress and the result through Dagster Pipes and
publishes the checkpoint to the lake (``lake_job.publish_output``); this module only trains.

How TRL is driven:

- data: a ``datasets.Dataset`` in TRL's vision-language *conversational prompt–completion* format — ``images``
  (one image per example, read from its file when a batch is built and downscaled to ``max_pixels``),
  ``prompt`` (the user message) and ``completion`` (the assistant message). TRL's vision collator renders the
  prompt with the generation prompt and the completion as the rest of the rendered chat (a text difference, so it
  needs no ``{% generation %}`` markers: released templates work as the tiny model's does), and with
  ``completion_only_loss`` only the completion's tokens (the answer and the turn's end) are labelled.
- LoRA through ``peft_config`` (r / alpha from the job, the builtin trainer's target modules) or full fine-tuning.
- precision as the builtin trainer's ``precision``: bf16 autocast on CUDA by default (fp32 trained weights, a
  LoRA run's frozen base in bf16), fp32 on CPU; gradient checkpointing on CUDA.
- the job's optimisation settings: the Trainer's AdamW (weight decay off biases and norms, gradient clipping,
  accumulation, length-grouped batches) on the builtin loop's learning-rate schedule (``sft.lr_factor``).
- resume: with a work folder (every lake job has one) the Trainer saves its own checkpoint (weights, optimizer,
  scheduler, RNG, data position) every ``save_every`` steps into ``<work>/resume/trl/checkpoint-<step>/`` (only
  the latest is kept), then this module writes ``resume/state.json`` (step, settings) and reports
  ``checkpoint_saved``, which mirrors the folder to the lake job when the work folder is not the lake's own.
  A relaunch with the same settings resumes from that checkpoint; past ``max_seconds`` the run saves and stops
  with ``TrainingTimeout``, as the builtin loop does.
- progress: a ``TrainerCallback`` turns each of the Trainer's logs (every ``log_every`` steps and at the last
  step) into a ``progress`` entry: loss, lr, grad_norm, answer tokens, tokens/s, peak memory, token accuracy.

Imports ``dagster_pipes`` only (through ``train``), never ``dagster``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTTrainer

from mella_assets.lib.lake import atomic_write_bytes
from mella_assets.lib.vlm import prepare_image
from mella_assets.training import train as protocol
from mella_assets.training.sft import (
    PID_FILE,
    RESUME_DIR,
    RESUME_INFO,
    STATE_FILE,
    SFTConfig,
    SFTResult,
    TrainingTimeout,
    check_config,
    distributed_context,
    example_lengths,
    lora_config,
    lr_factor,
    peak_memory_mb,
    read_examples,
    resolve_precision,
    resume_key,
)

TRAINER = "trl"
TRL_DIR = "trl"  # the Trainer's own checkpoints (checkpoint-<step>/), inside the work folder's resume/
IGNORE_INDEX = -100


# -- the dataset ----------------------------------------------------------------------------------------------------


def _open_images(batch: dict[str, list], max_pixels: int) -> dict[str, list]:
    """``with_transform`` hook: decoded images converted to RGB and downscaled as the builtin trainer does."""
    batch["images"] = [[prepare_image(image, max_pixels) for image in images] for images in batch["images"]]
    return batch


def vision_dataset(examples: Sequence[dict[str, str]], max_pixels: int, lengths: Sequence[int] | None = None):
    """The records as TRL's conversational prompt–completion dataset with images: the image files are read when a
    batch is built, not up front. ``lengths`` (tokens per example) become the ``length`` column that the Trainer's
    length-grouped sampler reads."""
    import datasets

    columns: dict[str, list] = {
        "images": [[example["image"]] for example in examples],
        "prompt": [[{"role": "user", "content": example["prompt"]}] for example in examples],
        "completion": [[{"role": "assistant", "content": example["answer"]}] for example in examples],
    }
    if lengths is not None:
        columns["length"] = list(lengths)
    dataset = datasets.Dataset.from_dict(columns).cast_column("images", datasets.List(datasets.Image()))
    return dataset.with_transform(partial(_open_images, max_pixels=max_pixels))


# -- TRL's settings -------------------------------------------------------------------------------------------------


def trl_arguments(config: SFTConfig, output_dir: str | Path, cuda: bool, saves: bool):
    """``trl.SFTConfig`` for the job: steps, batch, schedule, precision, logging every ``log_every`` steps, and the
    Trainer's checkpoints every ``save_every`` steps into ``output_dir`` when ``saves`` (else none). The learning
    rate schedule is the builtin loop's (:class:`MellaSFTTrainer`), not one of the Trainer's named ones."""
    import trl

    return trl.SFTConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        use_cpu=not cuda,  # without it accelerate runs each torchrun rank on CPU alone instead of DDP over gloo
        bf16=resolve_precision(config.precision, cuda) == "bf16-mixed",
        gradient_checkpointing=cuda,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cuda else None,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        logging_strategy="steps",
        logging_steps=config.log_every,
        save_strategy="steps" if saves else "no",
        save_steps=config.save_every,
        save_total_limit=1,
        # The prompt–completion collator labels the completion only; no truncation (it could cut image tokens).
        completion_only_loss=True,
        assistant_only_loss=False,
        max_length=None,
        pad_to_multiple_of=None,
        remove_unused_columns=False,  # the collator needs images, prompt and completion as they are
        report_to="none",
        disable_tqdm=True,
    )


def load_model(config: SFTConfig, cuda: bool) -> tuple[Any, Any, Any]:
    """The processor, the base model and the LoRA ``peft_config`` (None for full fine-tuning). Under bf16-mixed a
    LoRA run's frozen base is loaded in bf16 (PEFT keeps the adapter in fp32); a full run trains fp32 weights."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    mixed = resolve_precision(config.precision, cuda) == "bf16-mixed"
    processor = AutoProcessor.from_pretrained(config.base_model)
    model = AutoModelForImageTextToText.from_pretrained(
        config.base_model, dtype=torch.bfloat16 if mixed and config.method == "lora" else torch.float32
    )
    peft_config = None
    if config.method == "lora":
        peft_config = lora_config(config, model)
    return processor, model, peft_config


class MellaSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the builtin loop's learning-rate schedule (:func:`mella_assets.training.sft.lr_factor`:
    warmup from ``learning_rate / W`` — the Trainer's named schedules start at 0 —, then cosine / linear decay to
    ``min_lr_ratio`` or constant), so one job's settings mean the same under either trainer; it also counts the
    labelled (answer) tokens it trains on, over all ranks."""

    answer_tokens: int = 0
    mella_config: SFTConfig | None = None

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.mella_config is not None:
            import torch

            schedule = partial(lr_factor, self.mella_config)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and "labels" in inputs:
            labelled = (inputs["labels"] != IGNORE_INDEX).sum()
            self.answer_tokens += int(self.accelerator.reduce(labelled, reduction="sum").item())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


# -- progress, budget and resume state ------------------------------------------------------------------------------


def _number(value: Any, digits: int = 4) -> float | None:
    return round(float(value), digits) if isinstance(value, int | float) else None


@dataclass
class Reporter(TrainerCallback):
    """Turns the Trainer's logs into ``progress`` entries, logs and skips the checkpoint at the last step as the
    builtin loop does, stops (after a save) past ``max_seconds``, and writes ``resume/state.json`` after each
    save of the Trainer's checkpoint."""

    config: SFTConfig
    emit: Callable[[dict], None]
    cuda: bool
    started: float
    work_dir: Path | None
    answer_tokens_before: int = 0  # labelled tokens of the steps before a resume
    trainer: Any = None
    stopped_at: int = 0  # the step the budget stopped the run after (0: not stopped)
    tokens: float = 0.0  # tokens of the reported windows (this process)
    seconds: float = 0.0  # time of the reported windows
    _window_start: float = field(default_factory=time.perf_counter)
    _last_tokens: float = 0.0
    _last_answer_tokens: int = 0

    def answer_tokens(self) -> int:
        return self.answer_tokens_before + (self.trainer.answer_tokens if self.trainer is not None else 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._window_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True  # the last window, however short (the Trainer logs only at multiples)
            control.should_save = False  # the output folder is the result: no checkpoint of the last step
        elif self._past_budget():
            self.stopped_at = state.global_step
            control.should_save = self.work_dir is not None
            control.should_training_stop = True
        return control

    def _past_budget(self) -> bool:
        """Past ``max_seconds`` (model loading included); under torchrun the ranks agree, so all stop together."""
        overdue = bool(self.config.max_seconds) and time.perf_counter() - self.started > self.config.max_seconds
        import torch.distributed as torch_dist

        if torch_dist.is_available() and torch_dist.is_initialized():
            import torch

            flag = torch.tensor(float(overdue), device="cuda" if self.cuda else "cpu")
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            overdue = bool(flag.item())
        return overdue

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # the end-of-training summary (train_loss, train_runtime) is not a window
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        tokens = float(logs.get("num_tokens", self._last_tokens))
        window_tokens = max(tokens - self._last_tokens, 0.0)
        answer_tokens = self.answer_tokens()
        self.tokens += window_tokens
        self.seconds += elapsed
        if state.is_world_process_zero:
            memory, _ = peak_memory_mb(self.cuda)
            entry = {
                "event": "progress",
                "step": state.global_step,
                "loss": round(float(logs["loss"]), 4),
                # The rate of the window's last step, as the builtin loop reports it (the Trainer logs the next one).
                "lr": float(f"{self.config.learning_rate * lr_factor(self.config, state.global_step - 1):.6g}"),
                "grad_norm": _number(logs.get("grad_norm")),
                "answer_tokens": answer_tokens - self._last_answer_tokens,
                "tokens_per_s": round(window_tokens / elapsed, 1),
                "peak_memory_mb": memory,
                "mean_token_accuracy": _number(logs.get("mean_token_accuracy")),
            }
            self.emit({key: value for key, value in entry.items() if value is not None})
        self._last_tokens, self._last_answer_tokens = tokens, answer_tokens
        self._window_start = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if self.work_dir is None or not state.is_world_process_zero:
            return
        info = {
            "step": state.global_step,
            "saved_at": time.time(),
            "resume_key": resume_key(self.config),
            "trainer": TRAINER,
            "answer_tokens": self.answer_tokens(),
        }
        atomic_write_bytes(self.work_dir / RESUME_DIR / RESUME_INFO, json.dumps(info).encode())
        self.emit({"event": "checkpoint_saved", "step": state.global_step})


def resume_checkpoint(config: SFTConfig, work_dir: Path, clean: bool = True) -> tuple[Path, dict] | None:
    """The Trainer checkpoint in ``work_dir`` a relaunch continues from, and its summary: the one
    ``resume/state.json`` names, saved by this trainer under the same settings and not finished. With ``clean``
    (rank 0) anything else in the TRL folder is removed (another run's, or a half-written one)."""
    info_path = work_dir / RESUME_DIR / RESUME_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    trl_dir = work_dir / RESUME_DIR / TRL_DIR
    if info and info.get("trainer") == TRAINER and info.get("resume_key") == resume_key(config):
        checkpoint = trl_dir / f"checkpoint-{info['step']}"
        if info["step"] < config.max_steps and (checkpoint / "trainer_state.json").exists():
            for other in trl_dir.iterdir() if clean else ():
                if other.is_dir() and other != checkpoint:
                    shutil.rmtree(other, ignore_errors=True)
            return checkpoint, info
    if clean:
        shutil.rmtree(trl_dir, ignore_errors=True)
    return None


# -- one run --------------------------------------------------------------------------------------------------------


def build_trainer(
    config: SFTConfig,
    output_dir: str | Path,
    log: Callable[[dict], None] | None = None,
    started: float | None = None,
    answer_tokens_before: int = 0,
) -> tuple[MellaSFTTrainer, Reporter]:
    """The ``SFTTrainer`` for ``config`` (its Trainer folder ``output_dir``, checkpoints there when the config has
    a work folder) and its progress / budget / resume callback."""
    import torch
    from transformers import PrinterCallback

    check_config(config)
    dist = distributed_context()
    cuda = torch.cuda.is_available()
    examples = read_examples(config.train_file)
    processor, model, peft_config = load_model(config, cuda)
    lengths = example_lengths(processor, examples) if config.group_by_length else None
    work_dir = Path(config.work_dir) if config.work_dir else None
    reporter = Reporter(
        config=config,
        emit=log if (log is not None and dist.is_main) else (lambda entry: None),
        cuda=cuda,
        started=time.perf_counter() if started is None else started,
        work_dir=work_dir,
        answer_tokens_before=answer_tokens_before,
    )
    trainer = MellaSFTTrainer(
        model=model,
        args=trl_arguments(config, output_dir, cuda, saves=work_dir is not None),
        train_dataset=vision_dataset(examples, config.max_pixels, lengths),
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[reporter],
    )
    trainer.mella_config = config
    trainer.remove_callback(PrinterCallback)  # the progress entries report the logs
    reporter.trainer = trainer
    return trainer, reporter


def train_trl(config: SFTConfig, log: Callable[[dict], None] | None = None) -> SFTResult:
    """Fine-tune ``config.base_model`` (LoRA or full) with TRL's ``SFTTrainer`` and save the model (the adapter for
    LoRA), its processor and ``training_state.json`` to ``config.output_dir``: the builtin ``train_sft``'s
    contract (same progress entries, resume through ``config.work_dir``, ``TrainingTimeout`` past
    ``max_seconds``)."""
    started = time.perf_counter()
    dist = distributed_context()
    work_dir = Path(config.work_dir) if config.work_dir else None
    resume = None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        if dist.is_main:
            (work_dir / PID_FILE).write_text(str(os.getpid()))  # who holds this work dir (ops; the resume test)
        # Every rank finds the same checkpoint (in the shared lake folder, or in its copy pulled from S3).
        resume = resume_checkpoint(config, work_dir, clean=dist.is_main)
    with tempfile.TemporaryDirectory(prefix="mella-trl-") as scratch:
        trainer_dir = work_dir / RESUME_DIR / TRL_DIR if work_dir is not None else Path(scratch)
        before = int(resume[1].get("answer_tokens", 0)) if resume else 0
        trainer, reporter = build_trainer(config, trainer_dir, log, started, before)
        if resume is not None:
            reporter.emit({"event": "resumed", "step": int(resume[1]["step"])})
        trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    if reporter.stopped_at:
        saved = f"; resume state saved at step {reporter.stopped_at}: rematerialize to continue" if work_dir else ""
        raise TrainingTimeout(
            f"training stopped at step {reporter.stopped_at} of {config.max_steps} after "
            f"{time.perf_counter() - started:.1f} s, past its budget of {config.max_seconds:g} s "
            f"(MELLA_STAGE_TIMEOUT_S_FINETUNED_CHECKPOINT or MELLA_STAGE_TIMEOUT_S){saved}"
        )
    return finish(config, trainer, reporter, started, resumed_from=int(resume[1]["step"]) if resume else 0)


def finish(config: SFTConfig, trainer: MellaSFTTrainer, reporter: Reporter, started: float, resumed_from: int):
    """Save the model and processor and ``training_state.json`` (rank 0) and return the result; the losses are
    the Trainer's log windows, those before a resume included."""
    import trl

    dist = distributed_context()
    curve = [[int(e["step"]), round(float(e["loss"]), 4)] for e in trainer.state.log_history if "loss" in e]
    first_loss = next(float(e["loss"]) for e in trainer.state.log_history if "loss" in e)
    final_loss = next(float(e["loss"]) for e in reversed(trainer.state.log_history) if "loss" in e)
    precision = "bf16-mixed" if trainer.args.bf16 else "fp32"
    world_size = trainer.args.world_size
    effective_batch = config.batch_size * config.grad_accumulation_steps * world_size
    train_examples = len(trainer.train_dataset)
    answer_tokens = reporter.answer_tokens()
    output_dir = Path(config.output_dir)
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(output_dir)  # a PEFT model saves only its adapter
        trainer.processing_class.save_pretrained(output_dir)
        record = {
            "steps": config.max_steps,
            "first_loss": first_loss,
            "final_loss": final_loss,
            "train_examples": train_examples,
            "method": config.method,
            "base_model": config.base_model,
            "resumed_from_step": resumed_from,
            "world_size": world_size,
            "precision": precision,
            "effective_batch_size": effective_batch,
            "answer_tokens": answer_tokens,
            "trainer": TRAINER,
            "trl_version": trl.__version__,
            "config": asdict(config),
        }
        (output_dir / STATE_FILE).write_text(json.dumps(record, indent=2))
    trainer.accelerator.wait_for_everyone()
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    peak, peak_kind = peak_memory_mb(reporter.cuda)
    return SFTResult(
        output_dir=str(output_dir),
        steps=config.max_steps,
        first_loss=first_loss,
        final_loss=final_loss,
        train_examples=train_examples,
        tokens_per_s=round(reporter.tokens / reporter.seconds, 1) if reporter.seconds else 0.0,
        seconds=round(time.perf_counter() - started, 3),
        resumed_from_step=resumed_from,
        peak_memory_mb=peak,
        peak_memory_kind=peak_kind,
        world_size=world_size,
        loss_curve=curve,
        answer_tokens=answer_tokens,
        precision=precision,
        effective_batch_size=effective_batch,
    )


def main(argv: list[str] | None = None) -> None:
    """``train.main`` with TRL as the trainer: same arguments, same Pipes reports, ``trainer`` = 'trl' in the
    result's metadata."""
    protocol.main(argv, train=train_trl, extra_metadata={"trainer": TRAINER})


if __name__ == "__main__":
    main()
