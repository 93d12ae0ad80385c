"""Supervised fine-tuning of an image-text-to-text model on (image, prompt, answer) records.

A plain PyTorch loop (AdamW), not ``Trainer``: fewer moving parts and faster start-up for the tiny demo model,
and the same code runs a real checkpoint on a GPU (bf16 + gradient checkpointing there). The loss covers only
the assistant's answer, marked by the chat template's ``{% generation %}`` block.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
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
    batch_size: int = 4
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    log_every: int = 5


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


def train_sft(config: SFTConfig, log: Callable[[dict], None] | None = None) -> SFTResult:
    """Fine-tune ``config.base_model`` (LoRA or full) and save the result to ``config.output_dir``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if config.method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', not {config.method!r}")
    if config.max_steps < 1 or config.log_every < 1:
        raise ValueError("max_steps and log_every must be at least 1")
    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    examples = read_examples(config.train_file)

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
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

    order: list[int] = []
    losses: list[float] = []
    first_loss = float("nan")
    window_tokens, window_start, total_tokens, train_seconds = 0, time.perf_counter(), 0, 0.0
    for step in range(1, config.max_steps + 1):
        batch_examples = []
        while len(batch_examples) < min(config.batch_size, len(examples)):
            if not order:  # a new epoch, shuffled reproducibly from the seed
                order = list(range(len(examples)))
                random.shuffle(order)
            batch_examples.append(examples[order.pop()])
        batch = {
            key: value.to(device) for key, value in encode_batch(processor, batch_examples, config.max_pixels).items()
        }
        if cuda and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        losses.append(float(loss.detach()))
        window_tokens += int(batch["attention_mask"].sum())
        if step % config.log_every == 0 or step == config.max_steps:
            window = (step - 1) % config.log_every + 1
            elapsed = time.perf_counter() - window_start
            train_seconds += elapsed
            total_tokens += window_tokens
            window_loss = sum(losses[-window:]) / window
            if step <= config.log_every:
                first_loss = window_loss
            if log is not None:
                log({"step": step, "loss": round(window_loss, 4), "tokens_per_s": round(window_tokens / elapsed, 1)})
            window_tokens, window_start = 0, time.perf_counter()

    # Both losses are means over a log window (the first and the last), so one easy or hard batch cannot
    # decide whether training helped.
    last_window = (config.max_steps - 1) % config.log_every + 1
    final_loss = sum(losses[-last_window:]) / last_window
    output_dir = Path(config.output_dir)
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
        "config": asdict(config),
    }
    (output_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    return SFTResult(
        output_dir=str(output_dir),
        steps=config.max_steps,
        first_loss=first_loss,
        final_loss=final_loss,
        train_examples=len(examples),
        tokens_per_s=round(total_tokens / train_seconds, 1) if train_seconds else 0.0,
        seconds=round(time.perf_counter() - started, 3),
    )
