"""Model resources: the captioner (MLLM) and the translator.

Models are named by hub id, local path, or ``lake://models/...`` (a folder in the lake, e.g. the tiny demo
models). Loaded models are kept per process, so the partitions of one run load each model once.
"""

import os
from functools import lru_cache

import dagster as dg
from pydantic import Field

from mella_assets.lib.translation import Translator as HFTranslator
from mella_assets.lib.vlm import VisionLanguageModel

TINY_CAPTIONER = "lake://models/tiny/captioner"
TINY_TRANSLATOR = "lake://models/tiny/translator"


@lru_cache(maxsize=4)
def _load_vlm(path: str, adapter: str | None, device: str, dtype: str) -> VisionLanguageModel:
    return VisionLanguageModel.from_pretrained(path, adapter=adapter, device=device, dtype=dtype)


@lru_cache(maxsize=2)
def _load_translator(path: str, device: str, dtype: str) -> HFTranslator:
    return HFTranslator.from_pretrained(path, device=device, dtype=dtype)


def load_vlm(path: str, adapter: str | None = None, device: str = "auto", dtype: str = "auto"):
    """A vision-language model from a local path or hub id, cached per process."""
    return _load_vlm(path, adapter, device, dtype)


class Captioner(dg.ConfigurableResource):
    """The MLLM that writes detailed English captions for D_ling."""

    model: str = Field(
        default_factory=lambda: os.environ.get("MELLA_CAPTIONER_MODEL", TINY_CAPTIONER),
        description="Hub id, local path or lake:// folder of an image-text-to-text checkpoint.",
    )
    prompt_version: str = Field("caption-v1", description="Version of the caption prompt (mella_assets/prompts).")
    max_new_tokens: int = Field(48, description="Longest caption, in tokens.")
    batch_size: int = Field(8, description="Images per generate() call.")
    max_images_per_language: int = Field(0, description="Caption at most this many images per language (0 = all).")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    dtype: str = Field("auto", description="'auto' (bf16 on CUDA, fp32 on CPU), 'bfloat16', 'float32'.")

    def load(self, model_path: str) -> VisionLanguageModel:
        return load_vlm(model_path, None, self.device, self.dtype)


class Translator(dg.ConfigurableResource):
    """The machine translation model that carries English captions into the target language."""

    model: str = Field(
        default_factory=lambda: os.environ.get("MELLA_TRANSLATOR_MODEL", TINY_TRANSLATOR),
        description="Hub id, local path or lake:// folder of a seq2seq checkpoint (NLLB-200 by default in prod).",
    )
    max_new_tokens: int = Field(64, description="Longest translated sentence, in tokens.")
    batch_size: int = Field(16, description="Sentences per generate() call.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    dtype: str = Field("auto", description="'auto' (bf16 on CUDA, fp32 on CPU), 'bfloat16', 'float32'.")
    serbian_script: str = Field("cyrillic", description="'cyrillic' or 'latin' (transliterated) for sr output.")
    enforce_output_language: bool = Field(
        default_factory=lambda: os.environ.get("MELLA_TRANSLATION_LANGUAGE_QA", "enforce") == "enforce",
        description="Reject translations whose detected language is not the target. The tiny demo models "
        "write gibberish, so the demo records this check without enforcing it.",
    )

    def load(self, model_path: str) -> HFTranslator:
        return _load_translator(model_path, self.device, self.dtype)
