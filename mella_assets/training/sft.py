"""Supervised fine-tuning of an image-text-to-text model on (image, prompt, answer) records.

A plain PyTorch loop rather than ``Trainer`` (fewer moving parts, fast start-up for the tiny demo model), with
what a real fine-tuning run needs: AdamW with linear warmup and a cosine (or linear, or constant) decay to a floor,
gradient clipping, gradient accumulation whose loss is normalised over every answer token of the optimizer step,
bf16 mixed precision with fp32 master weights and optimizer state (the default on CUDA), gradient checkpointing on
a GPU, length-grouped batches (less padding), DDP under ``torchrun``, and a resume state from which a relaunch
continues exactly. The loss covers only the assistant's answer: the chat template's ``{% generation %}`` block
where it has one, else each assistant turn found by rendering the chat (:func:`answer_spans`).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mella_assets.lib.vlm import DEFAULT_MAX_PIXELS, prepare_image
from mella_assets.settings import variables
from mella_assets.training.families import lora_target_modules, prefix_lm_token_type_ids

IGNORE_INDEX = -100
# What LoRA adapts: the language model's linear layers (attention and MLP), found on the loaded model
# (mella_assets/training/families.py); the vision tower and the projector only when asked for.
LORA_SCOPES = ("language", "language+projector", "all")
METHODS = ("lora", "full")
STATE_FILE = "training_state.json"
PRECISIONS = ("auto", "fp32", "bf16-mixed")
LR_SCHEDULERS = ("cosine", "linear", "constant")
# Length grouping sorts within windows of this many global batches: wide enough to find similar lengths, narrow
# enough that each epoch's order stays random (the choice of HF Trainer's LengthGroupedSampler).
MEGA_BATCH_FACTOR = 50


@dataclass
class SFTConfig:
    """What to train, on what, and how (field names are also the Pipes ``extras`` keys).

    One optimizer step sees ``batch_size × grad_accumulation_steps × world_size`` examples (the effective batch):
    ``batch_size`` examples per forward pass on each process, ``grad_accumulation_steps`` forward passes per step,
    one process per GPU under torchrun."""

    base_model: str
    train_file: str  # JSONL: {"image": "/abs/path.jpg", "prompt": "...", "answer": "..."} per line
    output_dir: str
    method: str = "lora"  # "lora" or "full"
    max_steps: int = 20  # optimizer steps
    learning_rate: float = 2e-3  # peak AdamW learning rate (after warmup)
    batch_size: int = 4  # examples per micro-batch (one forward pass) on each process
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_scope: str = "language"  # one of LORA_SCOPES
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
    # Micro-batches whose gradients are summed before each optimizer step: a larger effective batch in the same
    # memory. The loss is the mean over every answer token of the step, as one batch that size would give.
    grad_accumulation_steps: int = 1
    # Learning rate after warmup: "cosine" or "linear" decay from learning_rate to min_lr_ratio × learning_rate
    # at the last step, or "constant".
    lr_scheduler: str = "cosine"
    # Linear warmup from learning_rate / warmup_steps up to learning_rate over the first steps: warmup_steps when
    # above 0, else ceil(warmup_ratio × max_steps). Warmup keeps AdamW's first, badly estimated updates small.
    warmup_steps: int = 0
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1  # the decay's floor, as a fraction of learning_rate
    max_grad_norm: float = 1.0  # clip the total gradient norm to this before each step (0: no clipping)
    weight_decay: float = 0.0  # AdamW decoupled weight decay, on weight matrices only (never biases or norms)
    # "bf16-mixed": forward and backward under bf16 autocast, trainable weights and AdamW state in fp32 (a LoRA
    # run's frozen base is loaded in bf16); "fp32": everything in fp32; "auto": bf16-mixed on CUDA, fp32 on CPU.
    precision: str = "auto"
    # Batches of examples of similar length (less padding, faster steps): each epoch is shuffled from the seed,
    # sorted by length within windows of MEGA_BATCH_FACTOR global batches, and its batches shuffled again.
    group_by_length: bool = True


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
    answer_tokens: int = 0  # labelled tokens trained on, all steps and ranks (a resumed run counts the earlier ones)
    precision: str = ""  # what "auto" resolved to: "fp32" or "bf16-mixed"
    effective_batch_size: int = 0  # examples per optimizer step: batch_size × grad_accumulation_steps × world_size


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


# Templates that mark the assistant turn get their answer mask from transformers; released templates (Qwen2-VL,
# InternVL, most others) have no markers, and then transformers only warns and masks nothing (loss NaN).
GENERATION_MARKER = "{% generation %}"


class NoAnswerTokens(ValueError):
    """An example whose answer is not found in its rendered chat: training on it would teach nothing (NaN loss)."""


def _chat_template(processor) -> str:
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    return template if isinstance(template, str) else ""


def _render_ids(processor, chat: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    rendered = processor.apply_chat_template(
        [chat], tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    ids = rendered["input_ids"][0]
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def answer_spans(processor, chat: list[dict[str, Any]], full_ids: Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of every assistant turn of ``chat`` in its rendering ``full_ids``, for any
    template: a turn starts where the chat before it, rendered with the generation prompt, stops matching the full
    rendering, and ends where the chat through it does (so the turn's end-of-turn tokens are labelled and the model
    learns to stop). Multi-turn safe: each assistant turn gets its own span.

    Each render processes the chat's images again, in the training loop: the last turn, whose chat is the whole
    chat, ends where ``full_ids`` ends, so a single-turn example costs one extra render, not two."""
    spans = []
    for turn, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(_render_ids(processor, chat[:turn], add_generation_prompt=True), full_ids)
        if turn == len(chat) - 1:
            end = len(full_ids)
        else:
            end = _common_prefix(_render_ids(processor, chat[: turn + 1], add_generation_prompt=False), full_ids)
        spans.append((start, end))
    return spans


def encode_batch(processor, examples: Sequence[dict[str, str]], max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Tokenize a batch (right padding) with ``labels`` = input ids on answer tokens, -100 elsewhere.

    The answer tokens come from the template's ``{% generation %}`` markers when it has them, else from
    :func:`answer_spans`. An example with no answer token is a :class:`NoAnswerTokens` error naming it."""
    processor.tokenizer.padding_side = "right"
    chats = []
    for example in examples:
        with Image.open(example["image"]) as image:
            chats.append(conversation(prepare_image(image, max_pixels), example["prompt"], example["answer"]))
    marked = GENERATION_MARKER in _chat_template(processor)
    batch = processor.apply_chat_template(
        chats,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=marked,
        return_tensors="pt",
        # Some processors (Aya Vision, InternVL) pad on the left whatever the tokenizer says; the answer spans
        # below assume the real tokens lead.
        processor_kwargs={"padding": True, "padding_side": "right"},
    )
    attention = batch["attention_mask"].bool()
    if marked:
        mask = batch.pop("assistant_masks").bool() & attention
    else:
        mask = attention.new_zeros(attention.shape)
        for row, chat in enumerate(chats):
            full_ids = batch["input_ids"][row][attention[row]].tolist()  # right padding: the real tokens lead
            for start, end in answer_spans(processor, chat, full_ids):
                mask[row, start:end] = True
    for row, example in enumerate(examples):
        if not mask[row].any():
            raise NoAnswerTokens(
                f"example {row} of the batch (prompt {example['prompt'][:60]!r}, answer {example['answer'][:60]!r}) "
                "has no answer tokens under this chat template: nothing to train on (the loss would be NaN); "
                "check the template's assistant turn or the answer"
            )
    batch["labels"] = batch["input_ids"].masked_fill(~mask, IGNORE_INDEX)
    prefix_lm_token_type_ids(processor, batch, mask)  # PaliGemma: the answer is the causal suffix
    return dict(batch)


RESUME_DIR = "resume"
RESUME_STATE = "state.pt"
RESUME_INFO = "state.json"
PID_FILE = "train.pid"
# Settings a resume state must share with the relaunch (paths and logging cadence may differ).
_RESUME_KEYS = (
    "base_model", "method", "max_steps", "learning_rate", "batch_size", "seed", "lora_r", "lora_alpha",
    "lora_scope",
    "grad_accumulation_steps", "lr_scheduler", "warmup_steps", "warmup_ratio", "min_lr_ratio", "max_grad_norm",
    "weight_decay", "precision", "group_by_length",
)  # fmt: skip


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


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def distributed_context(environ: dict[str, str] | None = None) -> DistributedContext:
    """Read torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) of ``environ`` (default:
    this process's, handed over by :func:`mella_assets.settings.variables`)."""
    env = variables(TORCHRUN_VARIABLES) if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistributedContext()
    return DistributedContext(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        launched=True,
    )


# -- resume state: what a killed run leaves for its relaunch ------------------------------------------------------


def resume_info(work_dir: str | Path) -> dict | None:
    """The step and time of the resume state in ``work_dir`` (None when there is none)."""
    path = Path(work_dir) / RESUME_DIR / RESUME_INFO
    return json.loads(path.read_text()) if path.exists() else None


def resume_key(config: SFTConfig) -> dict[str, Any]:
    """The settings a resume state was saved under; a relaunch resumes only from a state with the same key."""
    key = {name: getattr(config, name) for name in _RESUME_KEYS}
    return {**key, "base_model": config.base_model_source} if config.base_model_source else key


def save_resume_state(work_dir: Path, payload: dict[str, Any]) -> None:
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


def load_resume_state(work_dir: Path, config: SFTConfig) -> dict[str, Any] | None:
    """The resume state in ``work_dir`` if it was saved under ``config``'s settings and is not finished."""
    import torch

    path = work_dir / RESUME_DIR / RESUME_STATE
    if not path.exists():
        return None
    # Our own file (written by save_resume_state): it holds the Python RNG state, so not weights-only.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("resume_key") != resume_key(config) or payload["step"] >= config.max_steps:
        return None  # other settings (or already finished): start afresh rather than mix runs
    return payload


# -- one training run: setup, steps, progress, the result ---------------------------------------------------------


def peak_memory_mb(cuda: bool) -> tuple[float, str]:
    """Peak memory so far: CUDA max allocated on a GPU, the process's max RSS on CPU."""
    if cuda:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda_max_allocated"
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process_max_rss"  # Linux: KiB


def resolve_precision(precision: str, cuda: bool) -> str:
    """``auto`` → ``bf16-mixed`` on CUDA, ``fp32`` on CPU (where bf16 autocast is slow); the others as they are."""
    if precision == "auto":
        return "bf16-mixed" if cuda else "fp32"
    return precision


def warmup_steps(config: SFTConfig) -> int:
    """Steps of linear warmup: ``warmup_steps`` when set, else ``ceil(warmup_ratio × max_steps)``."""
    return config.warmup_steps if config.warmup_steps > 0 else math.ceil(config.warmup_ratio * config.max_steps)


def lr_factor(config: SFTConfig, steps_done: int) -> float:
    """The learning rate of optimizer step ``steps_done + 1`` as a fraction of ``learning_rate`` (LambdaLR counts
    the steps already taken). Step n ≤ W of W warmup steps runs at n / W; then the decay runs from 1 at the first
    step after warmup to ``min_lr_ratio`` at the last (cosine or linear), or stays at 1 (constant)."""
    step, warmup = steps_done + 1, warmup_steps(config)
    if step <= warmup:
        return step / warmup
    if config.lr_scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup - 1) / max(1, config.max_steps - warmup - 1))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if config.lr_scheduler == "cosine" else 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * decay


def build_optimizer(model: Any, config: SFTConfig) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (weight decay on matrices only: decaying biases and norm scales only
    hurts) and its learning-rate schedule (a LambdaLR of :func:`lr_factor`)."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([group for group in groups if group["params"]], lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda steps_done: lr_factor(config, steps_done))
    return optimizer, scheduler


def example_lengths(processor, examples: Sequence[dict[str, str]]) -> list[int]:
    """Tokens of each example's prompt and answer: the length estimate of batch grouping (the image's tokens are
    left out: the same for every image on most models, and unknown without opening it)."""
    texts = [f"{example['prompt']}\n{example['answer']}" for example in examples]
    return [len(ids) for ids in processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def epoch_order(rng: random.Random, lengths: Sequence[int], global_batch: int, group_by_length: bool) -> list[int]:
    """The order of one epoch: every example index once, shuffled by ``rng`` (the same on every rank). Grouped by
    length, it is sorted (longest first) within windows of ``MEGA_BATCH_FACTOR`` global batches, cut into global
    batches, and those shuffled again, with the batch of the longest example first (a batch that does not fit in
    memory fails at the first step, not hours in); a short last batch stays last."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length or global_batch < 2:
        return order
    window = MEGA_BATCH_FACTOR * global_batch
    for start in range(0, len(order), window):
        order[start : start + window] = sorted(order[start : start + window], key=lambda i: -lengths[i])
    batches = [order[start : start + global_batch] for start in range(0, len(order), global_batch)]
    short = [batches.pop()] if len(batches[-1]) < global_batch else []
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return [index for batch in batches + short for index in batch]


@dataclass
class TrainingState:
    """One run from setup to its result: the model, optimizer and schedule, the data order, and what was trained
    so far (the parts a resume state saves: ``order``, ``losses``, ``tokens``, ``answer_tokens``,
    ``train_seconds``, ``start_step``)."""

    config: SFTConfig
    dist: DistributedContext
    emit: Callable[[dict], None]  # progress entries (rank 0 only; a no-op on the other ranks)
    started: float  # perf_counter at setup: the watchdog counts model loading too
    cuda: bool
    device: str
    precision: str  # "fp32" or "bf16-mixed" ("auto" resolved)
    examples: list[dict[str, str]]
    lengths: list[int]  # length estimate per example (length grouping)
    processor: Any
    model: Any  # the (PEFT) model whose weights are saved
    trainable: set[str]  # names of the parameters being trained (all a resume state keeps of the weights)
    optimizer: Any
    scheduler: Any  # the learning-rate schedule (LambdaLR), stepped once per optimizer step
    rng: random.Random  # data order
    work_dir: Path | None  # where resume state is saved (None: nowhere)
    trained: Any = None  # what a step calls: the model, or its DDP wrapper under torchrun
    order: list[int] = field(default_factory=list)  # example indices left in this epoch, next first
    losses: list[float] = field(default_factory=list)  # one per step (the mean over the step's answer tokens)
    tokens: int = 0  # tokens of the log windows reported so far
    answer_tokens: int = 0  # labelled tokens of all steps so far
    train_seconds: float = 0.0  # time of the log windows reported so far
    start_step: int = 0  # the step a resumed run continues after (0: a fresh start)

    @property
    def global_batch(self) -> int:
        """Examples per micro-batch over all ranks."""
        return min(self.config.batch_size * self.dist.world_size, len(self.examples))

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step (an epoch's short last micro-batch aside)."""
        return self.global_batch * self.config.grad_accumulation_steps


@dataclass
class LogWindow:
    """Tokens, gradient norms and time since the last progress report."""

    tokens: int = 0
    answer_tokens: int = 0
    grad_norms: list[float] = field(default_factory=list)
    lr: float = 0.0  # of the window's last step
    start: float = field(default_factory=time.perf_counter)

    def add(self, step: StepResult) -> None:
        self.tokens += step.tokens
        self.answer_tokens += step.answer_tokens
        self.grad_norms.append(step.grad_norm)
        self.lr = step.lr

    def restart(self) -> None:
        self.tokens, self.answer_tokens, self.grad_norms, self.start = 0, 0, [], time.perf_counter()


@dataclass(frozen=True)
class StepResult:
    """One optimizer step, over all its micro-batches and ranks."""

    loss: float  # mean cross-entropy over the step's answer tokens
    tokens: int  # attention-mask tokens
    answer_tokens: int  # labelled tokens (the loss's denominator)
    grad_norm: float  # total gradient norm before clipping
    lr: float  # the learning rate the step ran at


def check_config(config: SFTConfig) -> None:
    if config.method not in METHODS:
        raise ValueError(f"method must be 'lora' or 'full', not {config.method!r}")
    if config.max_steps < 1 or config.log_every < 1 or config.save_every < 1:
        raise ValueError("max_steps, log_every and save_every must be at least 1")
    if config.batch_size < 1 or config.grad_accumulation_steps < 1:
        raise ValueError("batch_size and grad_accumulation_steps must be at least 1")
    if config.lora_scope not in LORA_SCOPES:
        raise ValueError(f"lora_scope must be one of {LORA_SCOPES}, not {config.lora_scope!r}")
    if config.lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, not {config.lr_scheduler!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {config.precision!r}")
    if not (0.0 <= config.min_lr_ratio <= 1.0 and 0.0 <= config.warmup_ratio <= 1.0):
        raise ValueError("min_lr_ratio and warmup_ratio must lie in [0, 1]")
    if min(config.warmup_steps, config.max_grad_norm, config.weight_decay, config.learning_rate) < 0:
        raise ValueError("warmup_steps, max_grad_norm, weight_decay and learning_rate must not be negative")


def lora_config(config: SFTConfig, model: Any) -> Any:
    """The PEFT LoRA config of ``config`` for ``model`` (the unwrapped base: its targets are read off it)."""
    from peft import LoraConfig

    targets = lora_target_modules(
        model, include_vision=config.lora_scope == "all", include_projector=config.lora_scope != "language"
    )
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=targets)


def load_model(config: SFTConfig, cuda: bool) -> tuple[Any, Any]:
    """The processor and the model to train: the base model, wrapped in a LoRA adapter for method 'lora'
    (gradient checkpointing on a GPU). Trained weights are fp32 whatever the precision (bf16-mixed keeps its
    master weights there); only a LoRA run's frozen base is loaded in bf16 under bf16-mixed, halving its memory."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    mixed = resolve_precision(config.precision, cuda) == "bf16-mixed"
    processor = AutoProcessor.from_pretrained(config.base_model)
    model = AutoModelForImageTextToText.from_pretrained(
        config.base_model, dtype=torch.bfloat16 if mixed and config.method == "lora" else torch.float32
    )
    if cuda:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.method == "lora":
        from peft import get_peft_model

        if cuda:
            model.enable_input_require_grads()
        lora = lora_config(config, model)
        model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()  # AdamW on bf16 weights loses small updates to rounding
    return processor, model


def restore_resume_state(state: TrainingState, payload: dict[str, Any]) -> None:
    """Continue ``state`` from a saved resume state: trained weights, optimizer, schedule, RNGs, data order, losses."""
    import torch

    state.model.load_state_dict(payload["trainable"], strict=False)  # only the trained tensors were saved
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    state.rng.setstate(payload["rng"])
    torch.set_rng_state(payload["torch_rng"])
    state.order, state.losses = list(payload["order"]), list(payload["losses"])
    state.tokens, state.answer_tokens = payload["tokens"], payload["answer_tokens"]
    state.train_seconds, state.start_step = payload["train_seconds"], payload["step"]


def setup_training(config: SFTConfig, log: Callable[[dict], None] | None = None) -> TrainingState:
    """Seed, join the torchrun process group, read the data, load the model, its optimizer and schedule, and pick
    up the resume state in ``config.work_dir`` when one of the same settings is there."""
    import torch

    check_config(config)
    started = time.perf_counter()
    dist = distributed_context()
    emit = log if (log is not None and dist.is_main) else (lambda entry: None)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    cuda = torch.cuda.is_available()
    device = f"cuda:{dist.local_rank}" if cuda else "cpu"
    precision = resolve_precision(config.precision, cuda)
    if cuda and precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16-mixed needs a GPU with bf16 (Ampere or newer); set precision to 'fp32'")
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

    processor, model = load_model(config, cuda)
    model.to(device).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer, scheduler = build_optimizer(model, config)
    state = TrainingState(
        config=config,
        dist=dist,
        emit=emit,
        started=started,
        cuda=cuda,
        device=device,
        precision=precision,
        examples=examples,
        lengths=example_lengths(processor, examples) if config.group_by_length else [0] * len(examples),
        processor=processor,
        model=model,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=rng,
        work_dir=work_dir,
    )
    resumed = load_resume_state(work_dir, config) if work_dir is not None else None
    if resumed is not None:
        restore_resume_state(state, resumed)
        emit({"event": "resumed", "step": state.start_step})
    state.trained = model
    if dist.launched:
        from torch.nn.parallel import DistributedDataParallel

        # Some trained parameters never reach the loss (LLaVA-style models read the vision tower's second-to-last
        # layer, so its last layer is idle): DDP must not wait for their gradients.
        state.trained = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if cuda else None, find_unused_parameters=True
        )
    return state


def next_micro_batch(state: TrainingState) -> list[dict[str, str]]:
    """This rank's slice of the next global micro-batch. An epoch's last micro-batch may be short (batches never
    straddle epochs, so length groups stay whole); a new epoch is ordered by :func:`epoch_order`."""
    if not state.order:
        state.order = epoch_order(state.rng, state.lengths, state.global_batch, state.config.group_by_length)
    batch = [state.examples[index] for index in state.order[: state.global_batch]]
    del state.order[: state.global_batch]
    return batch[state.dist.rank :: state.dist.world_size] or batch[:1]


def answer_loss_sum(logits: Any, labels: Any) -> Any:
    """Summed next-token cross-entropy over the labelled positions, in fp32 (only the answer positions' logits are
    upcast: the prompt's and the image's would cost memory for nothing)."""
    import torch.nn.functional as F

    if logits.shape[1] != labels.shape[1]:
        raise ValueError(f"the model returned {logits.shape[1]} positions for {labels.shape[1]} labels")
    targets = labels[:, 1:]
    answer = targets != IGNORE_INDEX
    return F.cross_entropy(logits[:, :-1][answer].float(), targets[answer], reduction="sum")


def model_inputs(state: TrainingState, encoded: dict) -> tuple[dict, Any]:
    """The batch on the device, without its labels (the loss is computed here), images in the model's dtype."""
    import torch

    dtype = getattr(state.model, "dtype", torch.float32)
    inputs = {}
    for key, value in encoded.items():
        if key != "labels":
            value = value.to(state.device)
            inputs[key] = value.to(dtype) if value.is_floating_point() else value
    return inputs, encoded["labels"].to(state.device)


def optimizer_step(state: TrainingState) -> StepResult:
    """One optimizer step over ``grad_accumulation_steps`` micro-batches on every rank: the loss is the summed
    cross-entropy divided by the answer tokens of the whole step (all micro-batches, all ranks), so accumulation
    weighs every token as one large batch would; then clip, step and advance the schedule."""
    import contextlib

    import torch
    import torch.distributed as torch_dist

    config = state.config
    encoded = [
        encode_batch(state.processor, next_micro_batch(state), config.max_pixels)
        for _ in range(config.grad_accumulation_steps)
    ]
    counts = torch.tensor(
        [
            sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in encoded),
            sum(int(batch["attention_mask"].sum()) for batch in encoded),
        ],
        dtype=torch.float64,
        device=state.device,
    )
    if state.dist.launched:
        torch_dist.all_reduce(counts)
    answer_tokens, tokens = int(counts[0]), int(counts[1])
    # DDP averages gradients over ranks: scaling by the world size turns that mean into the sum over all tokens.
    scale = state.dist.world_size / answer_tokens
    mixed = state.precision == "bf16-mixed"
    device_type = "cuda" if state.cuda else "cpu"
    loss_sum = torch.zeros((), dtype=torch.float64, device=state.device)
    for index, batch in enumerate(encoded):
        inputs, labels = model_inputs(state, batch)
        # Only the last micro-batch's backward all-reduces the gradients (the others only accumulate locally).
        last = index == len(encoded) - 1
        sync = state.trained.no_sync() if state.dist.launched and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed):
                logits = state.trained(**inputs).logits
            summed = answer_loss_sum(logits, labels)
            (summed * scale).backward()
        loss_sum += summed.detach().double()

    parameters = [p for p in state.model.parameters() if p.requires_grad]
    if config.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    lr = state.optimizer.param_groups[0]["lr"]
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)

    if state.dist.launched:
        torch_dist.all_reduce(loss_sum)
    return StepResult(
        loss=float(loss_sum) / answer_tokens,
        tokens=tokens,
        answer_tokens=answer_tokens,
        grad_norm=float(grad_norm),
        lr=lr,
    )


def report_progress(state: TrainingState, step: int, window: LogWindow) -> None:
    """Emit the ``progress`` entry of the log window ending at ``step`` and start the next window."""
    config = state.config
    steps = min((step - 1) % config.log_every + 1, step - state.start_step)
    elapsed = time.perf_counter() - window.start
    state.train_seconds += elapsed
    state.tokens += window.tokens
    memory, _ = peak_memory_mb(state.cuda)
    state.emit(
        {
            "event": "progress",
            "step": step,
            "loss": round(sum(state.losses[-steps:]) / steps, 4),
            "lr": float(f"{window.lr:.6g}"),
            "grad_norm": round(sum(window.grad_norms) / len(window.grad_norms), 4),
            "answer_tokens": window.answer_tokens,
            "tokens_per_s": round(window.tokens / elapsed, 1),
            "peak_memory_mb": memory,
        }
    )
    window.restart()


def past_budget(state: TrainingState) -> bool:
    """Whether the run is past ``max_seconds``; under torchrun every rank gets the same answer, so all stop at the
    same step (or the others would wait in a collective)."""
    config = state.config
    overdue = bool(config.max_seconds) and time.perf_counter() - state.started > config.max_seconds
    if state.dist.launched:
        import torch
        import torch.distributed as torch_dist

        flag = torch.tensor(float(overdue), device=state.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        overdue = bool(flag.item())
    return overdue


def resume_payload(state: TrainingState, step: int, window: LogWindow) -> dict[str, Any]:
    """The resume state after ``step``: trained tensors, optimizer, schedule, RNGs, data order, losses, tokens and
    time."""
    import torch

    return {
        "step": step,
        "resume_key": resume_key(state.config),
        "trainable": {k: v.detach().cpu() for k, v in state.model.state_dict().items() if k in state.trainable},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": state.rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "order": state.order,
        "losses": state.losses,
        "tokens": state.tokens + window.tokens,
        "answer_tokens": state.answer_tokens,
        "train_seconds": state.train_seconds + time.perf_counter() - window.start,
    }


def save_resume_point(state: TrainingState, step: int, window: LogWindow) -> None:
    """Save the resume state after ``step`` (rank 0, which emits ``checkpoint_saved``; the other ranks wait for
    it); nothing without a work folder."""
    if state.work_dir is None:
        return
    if state.dist.is_main:
        save_resume_state(state.work_dir, resume_payload(state, step, window))
        state.emit({"event": "checkpoint_saved", "step": step})
    if state.dist.launched:
        import torch.distributed

        torch.distributed.barrier()


def training_timeout(state: TrainingState, step: int) -> TrainingTimeout:
    """The error of a run stopped past its time budget after ``step`` (its resume state already saved)."""
    config = state.config
    saved = f"; resume state saved at step {step}: rematerialize to continue" if state.work_dir is not None else ""
    return TrainingTimeout(
        f"training stopped at step {step} of {config.max_steps} after {time.perf_counter() - state.started:.1f} s, "
        f"past its budget of {config.max_seconds:g} s (MELLA_STAGE_TIMEOUT_S_FINETUNED_CHECKPOINT or "
        f"MELLA_STAGE_TIMEOUT_S){saved}"
    )


def loss_summary(losses: Sequence[float], config: SFTConfig) -> tuple[float, float, list[list[float]]]:
    """First and final loss (means over the first and the last log window, so one easy or hard batch cannot
    decide whether training helped) and the curve of window means."""
    first_window = min(config.log_every, len(losses))
    first_loss = sum(losses[:first_window]) / first_window
    last_window = (config.max_steps - 1) % config.log_every + 1
    final_loss = sum(losses[-last_window:]) / last_window
    curve = [
        [step, round(sum(losses[max(0, step - config.log_every) : step]) / min(step, config.log_every), 4)]
        for step in range(config.log_every, config.max_steps + 1, config.log_every)
    ]
    return first_loss, final_loss, curve


def finish_training(state: TrainingState) -> SFTResult:
    """Save the trained model (a PEFT model saves only its adapter), its processor and ``training_state.json`` to
    ``output_dir`` (rank 0), leave the process group, and return the result."""
    config = state.config
    # A resumed run keeps the losses of the steps before the kill.
    first_loss, final_loss, curve = loss_summary(state.losses, config)
    peak, peak_kind = peak_memory_mb(state.cuda)
    output_dir = Path(config.output_dir)
    if state.dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        state.model.save_pretrained(output_dir)
        state.processor.save_pretrained(output_dir)
        record = {
            "steps": config.max_steps,
            "first_loss": first_loss,
            "final_loss": final_loss,
            "train_examples": len(state.examples),
            "method": config.method,
            "base_model": config.base_model,
            "resumed_from_step": state.start_step,
            "world_size": state.dist.world_size,
            "precision": state.precision,
            "effective_batch_size": state.effective_batch_size,
            "answer_tokens": state.answer_tokens,
            "config": asdict(config),
        }
        (output_dir / STATE_FILE).write_text(json.dumps(record, indent=2))
    if state.dist.launched:
        import torch.distributed

        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return SFTResult(
        output_dir=str(output_dir),
        steps=config.max_steps,
        first_loss=first_loss,
        final_loss=final_loss,
        train_examples=len(state.examples),
        tokens_per_s=round(state.tokens / state.train_seconds, 1) if state.train_seconds else 0.0,
        seconds=round(time.perf_counter() - state.started, 3),
        resumed_from_step=state.start_step,
        peak_memory_mb=peak,
        peak_memory_kind=peak_kind,
        world_size=state.dist.world_size,
        loss_curve=curve,
        answer_tokens=state.answer_tokens,
        precision=state.precision,
        effective_batch_size=state.effective_batch_size,
    )


def train_sft(config: SFTConfig, log: Callable[[dict], None] | None = None) -> SFTResult:
    """Fine-tune ``config.base_model`` (LoRA or full) and save the result to ``config.output_dir``.

    ``log`` receives progress entries: ``event`` = ``progress`` every ``log_every`` steps with the window's mean
    ``loss`` (per answer token), the ``lr`` of its last step, its mean pre-clip ``grad_norm``, its labelled
    ``answer_tokens`` (summed), ``tokens_per_s`` and ``peak_memory_mb``; ``resumed`` and ``checkpoint_saved``
    around resume state. Under ``torchrun`` every process trains on its own slice of each global batch through DDP
    (gloo on CPU, NCCL on CUDA); rank 0 logs and saves. Past ``max_seconds`` the run saves its resume state and
    raises :class:`TrainingTimeout`.
    """
    state = setup_training(config, log)
    window = LogWindow()
    for step in range(state.start_step + 1, config.max_steps + 1):
        result = optimizer_step(state)
        state.losses.append(result.loss)
        state.answer_tokens += result.answer_tokens
        window.add(result)
        if step % config.log_every == 0 or step == config.max_steps:
            report_progress(state, step, window)
        overdue = past_budget(state)
        if step < config.max_steps and (step % config.save_every == 0 or overdue):
            save_resume_point(state, step, window)
            if overdue:
                raise training_timeout(state, step)
    return finish_training(state)
