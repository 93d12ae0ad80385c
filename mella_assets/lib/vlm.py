"""Batched, deterministic image captioning with any Hugging Face image-text-to-text checkpoint.

Works for LLaVA, Qwen2-VL, Idefics and the tiny test VLM alike: the prompt is built with the processor's own
chat template (user turn = one image + the prompt text), so no model-specific prompt format lives here.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mella_assets.lib.cache import model_fingerprint

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_MAX_PIXELS = 768 * 768


# Where an image opened from the lake keeps its file's (MIME type, bytes, size), so a remote backend can send the
# stored file as it is instead of re-encoding the pixels.
STORED_BYTES_KEY = "mella_stored_bytes"
_SENDABLE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def open_rgb_image(data: bytes) -> Image.Image:
    """A stored (validated, re-encoded) image's bytes as an RGB image, as every model here takes it."""
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
        mime = _SENDABLE_FORMATS.get(source.format or "")
    if mime and source.mode == "RGB":
        image.info[STORED_BYTES_KEY] = (mime, data, image.size)
    return image


@dataclass(frozen=True)
class CaptionPrompt:
    """A versioned caption instruction (the version goes into every cache key)."""

    version: str
    text: str


@dataclass(frozen=True)
class Generation:
    """One generated text and its token counts (prompt tokens include the image tokens)."""

    text: str
    prompt_tokens: int
    new_tokens: int


def load_caption_prompt(version: str = "caption-v1") -> CaptionPrompt:
    """Read the caption prompt ``version`` from ``mella_assets/prompts/<version with _>.json``."""
    path = PROMPTS_DIR / f"{version.replace('-', '_')}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["version"] != version:
        raise ValueError(f"{path} holds prompt version {data['version']!r}, not {version!r}")
    return CaptionPrompt(version=data["version"], text=data["text"])


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> bfloat16 on CUDA, float32 elsewhere; otherwise the named torch dtype."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def prepare_image(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Convert to RGB and downscale (keeping the aspect ratio) to at most ``max_pixels`` pixels."""
    image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def user_turn(prompt: str, image: Image.Image | None = None) -> dict[str, Any]:
    """A chat message with one image (when given) followed by the prompt text."""
    content: list[dict[str, Any]] = [{"type": "image"} if image is None else {"type": "image", "image": image}]
    content.append({"type": "text", "text": prompt})
    return {"role": "user", "content": content}


class VisionLanguageModel:
    """An image-text-to-text model and its processor, with optional LoRA adapter."""

    def __init__(self, model, processor, model_id: str, adapter: str | None, device: str) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self._model_id = model_id
        self._adapter = adapter
        self._version: str | None = None

    @classmethod
    def from_pretrained(
        cls, model_id: str, adapter: str | None = None, device: str = "auto", dtype: str = "auto"
    ) -> VisionLanguageModel:
        """Load processor and model (``device``/``dtype`` ``auto``: CUDA + bf16 when present, else CPU fp32)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = resolve_device(device)
        processor = AutoProcessor.from_pretrained(str(model_id))
        model = AutoModelForImageTextToText.from_pretrained(str(model_id), dtype=resolve_dtype(dtype, device))
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        model.to(device).eval()
        return cls(model, processor, str(model_id), str(adapter) if adapter else None, device)

    @property
    def model_id(self) -> str:
        """The id or path the model was loaded from."""
        return self._model_id

    @property
    def version(self) -> str:
        """Model id (plus adapter) and, for local folders, a content fingerprint: part of cache keys."""
        if self._version is None:
            self._version = model_fingerprint(self._model_id, self._adapter)
        return self._version

    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        max_new_tokens: int = 48,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Generation]:
        """Greedy-decode one answer per (image, prompt) pair, in input order."""
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        results: list[Generation] = []
        for start in range(0, len(images), batch_size):
            batch_images = [prepare_image(image, max_pixels) for image in images[start : start + batch_size]]
            texts = [
                self.processor.apply_chat_template([user_turn(prompt)], add_generation_prompt=True, tokenize=False)
                for prompt in prompts[start : start + batch_size]
            ]
            # One image per prompt, nested per sample (Gemma 3 reads a flat list as one sample's images); left
            # padding asked of the processor too, since some (InternVL, Aya Vision) set their own padding side.
            nested = [[image] for image in batch_images]
            inputs = self.processor(images=nested, text=texts, padding=True, padding_side="left", return_tensors="pt")
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs and self.model.dtype != torch.float32:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id
                )
            new = output[:, inputs["input_ids"].shape[1] :].cpu()
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
            for row, text, prompt_tokens in zip(new, decoded, prompt_lengths, strict=True):
                results.append(
                    Generation(
                        text=text.strip(), prompt_tokens=int(prompt_tokens), new_tokens=_count_new(row, tokenizer)
                    )
                )
        return results


def _count_new(row, tokenizer) -> int:
    """Generated tokens up to and including the first end-of-sequence token (padding after it excluded)."""
    ids = row.tolist()
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        return ids.index(eos) + 1
    pad = tokenizer.pad_token_id
    return sum(1 for token in ids if token != pad) if pad is not None else len(ids)
