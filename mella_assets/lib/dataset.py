"""Merge D_know and D_ling into SFT records with native prompts and a train/test split by image."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import polars as pl

PROMPT_BANK_PATH = Path(__file__).resolve().parent.parent / "prompts" / "prompt_bank.json"
SPLIT_SALT = "mella-split-v1"
IMAGE_TOKEN = "<image>"

DATASET_SCHEMA = {
    "id": pl.String,
    "language": pl.String,
    "source": pl.String,
    "image_sha256": pl.String,
    "image_key": pl.String,
    "split_group": pl.String,
    "split": pl.String,
    "prompt": pl.String,
    "text": pl.String,
    "caption_en": pl.String,
    "keywords": pl.List(pl.String),
    "page_url": pl.String,
    "domain": pl.String,
    "conversation": pl.String,
}


@lru_cache(maxsize=1)
def load_prompt_bank() -> dict:
    return json.loads(PROMPT_BANK_PATH.read_text(encoding="utf-8"))


def prompts_for(language: str, source: str) -> list[str]:
    """The native instructions of a language for a source kind (English where the bank has none)."""
    bank = load_prompt_bank()
    return (bank.get(language) or bank["en"])[source]


def _unit_interval(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def assign_split(split_group: str, test_fraction: float) -> str:
    """train or test for a group of identical / near-identical images.

    It depends only on the group key, so no image (or its near-duplicate with the same perceptual hash) can
    be in both splits, reruns give the same split, and adding data never moves an existing image.
    """
    return "test" if _unit_interval(f"{SPLIT_SALT}:{split_group}") < test_fraction else "train"


def record_id(language: str, source: str, image_sha256: str, text: str) -> str:
    return hashlib.sha256(f"{language}|{source}|{image_sha256}|{text}".encode()).hexdigest()[:20]


def build_sft_records(
    d_know: pl.DataFrame, d_ling: pl.DataFrame, language: str, test_fraction: float = 0.2
) -> pl.DataFrame:
    """One SFT record per D_know and D_ling pair: native prompt, answer ``text``, split by image group.

    D_know answers are the native alt texts; D_ling answers are the translated captions.
    """
    rows = []
    for source, frame in (("know", d_know), ("ling", d_ling)):
        prompts = prompts_for(language, source)
        for row in frame.iter_rows(named=True):
            answer = row["alt_text"] if source == "know" else row["text"]
            rid = record_id(language, source, row["image_sha256"], answer)
            prompt = prompts[int(rid[:8], 16) % len(prompts)]
            group = row.get("phash") or row["image_sha256"]
            conversation = [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{prompt}"},
                {"role": "assistant", "content": answer},
            ]
            rows.append(
                {
                    "id": rid,
                    "language": language,
                    "source": source,
                    "image_sha256": row["image_sha256"],
                    "image_key": row["image_key"],
                    "split_group": group,
                    "split": assign_split(group, test_fraction),
                    "prompt": prompt,
                    "text": answer,
                    "caption_en": row.get("caption_en"),
                    "keywords": row.get("keywords"),
                    "page_url": row.get("page_url"),
                    "domain": row.get("domain"),
                    "conversation": json.dumps(conversation, ensure_ascii=False),
                }
            )
    frame = pl.DataFrame(rows, schema=DATASET_SCHEMA)
    return frame.unique("id", keep="first", maintain_order=True).sort("source", "id")


def split_leakage(frame: pl.DataFrame) -> int:
    """Number of image groups that appear in both splits (must be 0)."""
    if frame.is_empty():
        return 0
    both = frame.group_by("split_group").agg(pl.col("split").n_unique().alias("splits"))
    return int((both["splits"] > 1).sum())
