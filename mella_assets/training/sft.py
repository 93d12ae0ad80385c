"""Supervised fine-tuning of an image-text-to-text model on (image, prompt, answer) records.

A plain PyTorch loop (AdamW), not ``Trainer``: fewer moving parts and faster start-up for the tiny demo model,
and the same code runs a real checkpoint on a GPU (bf16 + gradient checkpointing there). The loss covers only
the assistant's answer, marked by the chat template's ``{% generation %}`` block.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mella_assets.lib.vlm import DEFAULT_MAX_PIXELS, prepare_image

IGNORE_INDEX = -100
# Attention projections of the language model only: CLIP / SigLIP vision towers have q_proj / v_proj too.
LORA_TARGET_MODULES = r".*(language_model|text_model).*\.(q_proj|v_proj)$"
STATE_FILE = "training_state.json"


@dataclass
class SFTConfig:
    """What to train, on what, and how (field names are also the Pipes ``extras`` keys)."""

    base_model: str
    train_file: str  # JSONL: {"image": "/abs/path.jpg", "prompt": "...", "answer": "..."} per line
    output_dir: str
    method: str = "lora"  # "lora" or "full"
    max_steps: int = 20
    learning_rate: float = 2e-3
    batch_size: int = 4  # examples per step on each process
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    log_every: int = 5
    # Resume state (trainable weights, optimizer, data order, losses) is saved here every ``save_every`` steps;
    # a relaunch with the same settings continues from it. Empty: no resume state.
    work_dir: str = ""
    save_every: int = 10
    # Where ``base_model`` was copied from (a lake:// or hub reference) when it is a local copy whose path can
    # differ between launches (a fresh pod's cache); resume state is matched on it instead of the path.
    base_model_source: str = ""
    # Wall-clock budget of the whole run in seconds (0: none). Past it the run saves its resume state and stops
    # with TrainingTimeout, so a stalled or runaway training stage cannot hold a GPU forever; a rerun resumes.
    max_seconds: float = 0.0


class TrainingTimeout(RuntimeError):
    """The training run went past ``SFTConfig.max_seconds``; its resume state was saved first."""


@dataclass
class SFTResult:
    """What a training run produced (losses are means over the first and the last ``log_every`` steps)."""

    output_dir: str
    steps: int
    first_loss: float
    final_loss: float
    train_examples: int
    tokens_per_s: float
    seconds: float
    resumed_from_step: int = 0  # 0: a fresh start
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""  # "cuda_max_allocated" or "process_max_rss"
    world_size: int = 1
    loss_curve: list[list[float]] = field(default_factory=list)  # [step, window mean loss] per log window


def read_examples(train_file: str | Path) -> list[dict[str, str]]:
    """Read the JSONL training records, checking each has ``image``, ``prompt`` and ``answer``."""
    examples = []
    with open(train_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = {"image", "prompt", "answer"} - record.keys()
            if missing:
                raise ValueError(f"{train_file}:{number} lacks {sorted(missing)}")
            examples.append(record)
    if not examples:
        raise ValueError(f"{train_file} holds no training examples")
    return examples


def conversation(image: Image.Image, prompt: str, answer: str) -> list[dict[str, Any]]:
    """The chat of one training example: user (image + prompt), then assistant (answer)."""
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def encode_batch(processor, examples: Sequence[dict[str, str]], max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Tokenize a batch (right padding) with ``labels`` = input ids on answer tokens, -100 elsewhere."""
    processor.tokenizer.padding_side = "right"
    chats = []
    for example in examples:
        with Image.open(example["image"]) as image:
            chats.append(conversation(prepare_image(image, max_pixels), example["prompt"], example["answer"]))
    batch = processor.apply_chat_template(
        chats,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    mask = batch.pop("assistant_masks").bool() & batch["attention_mask"].bool()
    batch["labels"] = batch["input_ids"].masked_fill(~mask, IGNORE_INDEX)
    return dict(batch)


RESUME_DIR = "resume"
RESUME_STATE = "state.pt"
RESUME_INFO = "state.json"
PID_FILE = "train.pid"
# Settings a resume state must share with the relaunch (paths and logging cadence may differ).
_RESUME_KEYS = ("base_model", "method", "max_steps", "learning_rate", "batch_size", "seed", "lora_r", "lora_alpha")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a ``torchrun`` launch (rank 0 of 1 when launched plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # True under torchrun (RANK / WORLD_SIZE set)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(environ: dict[str, str] | None = None) -> DistributedContext:
    """Read torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistributedContext()
    return DistributedContext(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        launched=True,
    )


def resume_info(work_dir: str | Path) -> dict | None:
    """The step and time of the resume state in ``work_dir`` (None when there is none)."""
    path = Path(work_dir) / RESUME_DIR / RESUME_INFO
    return json.loads(path.read_text()) if path.exists() else None


def _resume_key(config: SFTConfig) -> dict[str, Any]:
    key = {name: getattr(config, name) for name in _RESUME_KEYS}
    return {**key, "base_model": config.base_model_source} if config.base_model_source else key


def _save_resume_state(work_dir: Path, payload: dict[str, Any]) -> None:
    """Write the resume state atomically (temp name, then rename), the JSON summary last."""
    import torch

    folder = work_dir / RESUME_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{os.getpid()}-{RESUME_STATE}"
    torch.save(payload, tmp)
    os.replace(tmp, folder / RESUME_STATE)
    info = {"step": payload["step"], "saved_at": time.time(), "resume_key": payload["resume_key"]}
    tmp_info = folder / f".tmp-{os.getpid()}-{RESUME_INFO}"
    tmp_info.write_text(json.dumps(info))
    os.replace(tmp_info, folder / RESUME_INFO)


def _load_resume_state(work_dir: Path, config: SFTConfig) -> dict[str, Any] | None:
    import torch

    path = work_dir / RESUME_DIR / RESUME_STATE
    if not path.exists():
        return None
    # Our own file (written by _save_resume_state): it holds the Python RNG state, so not weights-only.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("resume_key") != _resume_key(config) or payload["step"] >= config.max_steps:
        return None  # other settings (or already finished): start afresh rather than mix runs
    return payload


def _peak_memory_mb(cuda: bool) -> tuple[float, str]:
    """Peak memory so far: CUDA max allocated on a GPU, the process's max RSS on CPU."""
    if cuda:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda_max_allocated"
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process_max_rss"  # Linux: KiB


def train_sft(config: SFTConfig, log: Callable[[dict], None] | None = None) -> SFTResult:
    """Fine-tune ``config.base_model`` (LoRA or full) and save the result to ``config.output_dir``.

    ``log`` receives progress entries (``event`` = ``progress`` every ``log_every`` steps with loss, tokens/s and
    peak memory; ``resumed`` and ``checkpoint_saved`` around resume state). Under ``torchrun`` every process
    trains on its own slice of each global batch through DDP (gloo on CPU, NCCL on CUDA); rank 0 logs and saves.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if config.method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', not {config.method!r}")
    if config.max_steps < 1 or config.log_every < 1 or config.save_every < 1:
        raise ValueError("max_steps, log_every and save_every must be at least 1")
    started = time.perf_counter()
    dist = distributed_context()
    emit = log if (log is not None and dist.is_main) else (lambda entry: None)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    cuda = torch.cuda.is_available()
    device = f"cuda:{dist.local_rank}" if cuda else "cpu"
    if dist.launched:
        import torch.distributed as torch_dist

        if cuda:
            torch.cuda.set_device(dist.local_rank)
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    examples = read_examples(config.train_file)
    work_dir = Path(config.work_dir) if config.work_dir else None
    if work_dir is not None and dist.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / PID_FILE).write_text(str(os.getpid()))  # who holds this work dir (ops; the resume test)

    processor = AutoProcessor.from_pretrained(config.base_model)
    model = AutoModelForImageTextToText.from_pretrained(
        config.base_model, dtype=torch.bfloat16 if cuda else torch.float32
    )
    if cuda:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        if cuda:
            model.enable_input_require_grads()
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGET_MODULES
        )
        model = get_peft_model(model, lora)
    model.to(device).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

    order: list[int] = []
    losses: list[float] = []
    total_tokens, train_seconds, start_step = 0, 0.0, 0
    resumed = _load_resume_state(work_dir, config) if work_dir is not None else None
    if resumed is not None:
        model.load_state_dict(resumed["trainable"], strict=False)  # only the trained tensors were saved
        optimizer.load_state_dict(resumed["optimizer"])
        rng.setstate(resumed["rng"])
        torch.set_rng_state(resumed["torch_rng"])
        order, losses = list(resumed["order"]), list(resumed["losses"])
        total_tokens, train_seconds, start_step = resumed["tokens"], resumed["train_seconds"], resumed["step"]
        emit({"event": "resumed", "step": start_step})
    trained = model
    if dist.launched:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[dist.local_rank] if cuda else None)

    window_tokens, window_start = 0, time.perf_counter()
    global_batch = min(config.batch_size * dist.world_size, len(examples))
    for step in range(start_step + 1, config.max_steps + 1):
        batch_examples = []
        while len(batch_examples) < global_batch:
            if not order:  # a new epoch, shuffled reproducibly from the seed (the same on every rank)
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch_examples.append(examples[order.pop()])
        mine = batch_examples[dist.rank :: dist.world_size] or batch_examples[:1]
        batch = {key: value.to(device) for key, value in encode_batch(processor, mine, config.max_pixels).items()}
        if cuda and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        loss = trained(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        step_loss = loss.detach().float()
        step_tokens = batch["attention_mask"].sum().float()
        if dist.launched:  # the logged loss is the mean over ranks, tokens the sum
            import torch.distributed as torch_dist

            torch_dist.all_reduce(step_loss)
            torch_dist.all_reduce(step_tokens)
            step_loss /= dist.world_size
        losses.append(float(step_loss))
        window_tokens += int(step_tokens)
        if step % config.log_every == 0 or step == config.max_steps:
            window = min((step - 1) % config.log_every + 1, step - start_step)
            elapsed = time.perf_counter() - window_start
            train_seconds += elapsed
            total_tokens += window_tokens
            memory, _ = _peak_memory_mb(cuda)
            emit(
                {
                    "event": "progress",
                    "step": step,
                    "loss": round(sum(losses[-window:]) / window, 4),
                    "tokens_per_s": round(window_tokens / elapsed, 1),
                    "peak_memory_mb": memory,
                }
            )
            window_tokens, window_start = 0, time.perf_counter()
        overdue = bool(config.max_seconds) and time.perf_counter() - started > config.max_seconds
        if dist.launched:  # every rank stops at the same step, or the others would wait in a collective
            import torch.distributed as torch_dist

            flag = torch.tensor(float(overdue), device=device)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            overdue = bool(flag.item())
        save_now = step % config.save_every == 0 or overdue
        if work_dir is not None and save_now and step < config.max_steps:
            if dist.is_main:
                _save_resume_state(
                    work_dir,
                    {
                        "step": step,
                        "resume_key": _resume_key(config),
                        "trainable": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable},
                        "optimizer": optimizer.state_dict(),
                        "rng": rng.getstate(),
                        "torch_rng": torch.get_rng_state(),
                        "order": order,
                        "losses": losses,
                        "tokens": total_tokens + window_tokens,
                        "train_seconds": train_seconds + time.perf_counter() - window_start,
                    },
                )
                emit({"event": "checkpoint_saved", "step": step})
            if dist.launched:
                torch.distributed.barrier()
        if overdue and step < config.max_steps:
            saved = f"; resume state saved at step {step}: rematerialize to continue" if work_dir is not None else ""
            raise TrainingTimeout(
                f"training stopped at step {step} of {config.max_steps} after {time.perf_counter() - started:.1f} s, "
                f"past its budget of {config.max_seconds:g} s (MELLA_STAGE_TIMEOUT_S_FINETUNED_CHECKPOINT or "
                f"MELLA_STAGE_TIMEOUT_S){saved}"
            )

    # Both losses are means over a log window (the first and the last), so one easy or hard batch cannot
    # decide whether training helped; a resumed run keeps the losses of the steps before the kill.
    first_window = min(config.log_every, len(losses))
    first_loss = sum(losses[:first_window]) / first_window
    last_window = (config.max_steps - 1) % config.log_every + 1
    final_loss = sum(losses[-last_window:]) / last_window
    curve = [
        [step, round(sum(losses[max(0, step - config.log_every) : step]) / min(step, config.log_every), 4)]
        for step in range(config.log_every, config.max_steps + 1, config.log_every)
    ]
    peak, peak_kind = _peak_memory_mb(cuda)
    output_dir = Path(config.output_dir)
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)  # a PEFT model saves only its adapter
        processor.save_pretrained(output_dir)
        state = {
            "steps": config.max_steps,
            "first_loss": first_loss,
            "final_loss": final_loss,
            "train_examples": len(examples),
            "method": config.method,
            "base_model": config.base_model,
            "resumed_from_step": start_step,
            "world_size": dist.world_size,
            "config": asdict(config),
        }
        (output_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    if dist.launched:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return SFTResult(
        output_dir=str(output_dir),
        steps=config.max_steps,
        first_loss=first_loss,
        final_loss=final_loss,
        train_examples=len(examples),
        tokens_per_s=round(total_tokens / train_seconds, 1) if train_seconds else 0.0,
        seconds=round(time.perf_counter() - started, 3),
        resumed_from_step=start_step,
        peak_memory_mb=peak,
        peak_memory_kind=peak_kind,
        world_size=dist.world_size,
        loss_curve=curve,
    )
