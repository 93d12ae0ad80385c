"""Exports of the SFT dataset for other trainers, with a dataset card."""

from __future__ import annotations

import json

import polars as pl

EXPORT_NAME = "mella"


def to_sharegpt(records: pl.DataFrame) -> list[dict]:
    """LLaVA / ShareGPT records as LLaMA-Factory and ms-swift read them (image paths relative to the lake)."""
    return [
        {
            "id": row["id"],
            "language": row["language"],
            "source": row["source"],
            "images": [row["image_key"]],
            "conversations": [
                {"from": "human", "value": f"<image>{row['prompt']}"},
                {"from": "gpt", "value": row["text"]},
            ],
        }
        for row in records.iter_rows(named=True)
    ]


def llama_factory_dataset_info(file_name: str) -> dict:
    """The `dataset_info.json` entry that registers a ShareGPT file with LLaMA-Factory."""
    return {
        EXPORT_NAME: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
    }


def dataset_card(records: pl.DataFrame, version: str) -> str:
    """A README.md for the export: counts per language, source and split, answer lengths, how to load it."""
    counts = (
        records.group_by("language", "source", "split").len().sort("language", "source", "split")
        if records.height
        else pl.DataFrame()
    )
    lines = [
        f"# MELLA dataset export `{version}`",
        "",
        "Multilingual image–text SFT data built with the MELLA method (arXiv 2508.05502): `know` records pair an",
        "image with its native alt text (cultural knowledge); `ling` records pair it with a machine-translated",
        "detailed caption (linguistic fluency). Splits are assigned by image, so no image crosses train and test.",
        "",
        "| language | source | split | records |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['language']} | {r['source']} | {r['split']} | {r['len']} |" for r in counts.iter_rows(named=True)]
    if records.height:
        lengths = records.group_by("language", "source").agg(
            pl.col("text").str.len_chars().median().alias("median_chars")
        )
        lines += ["", "| language | source | median answer length (chars) |", "|---|---|---|"]
        lines += [
            f"| {r['language']} | {r['source']} | {r['median_chars']:.0f} |"
            for r in lengths.sort("language", "source").iter_rows(named=True)
        ]
    lines += [
        "",
        "## Files",
        "- `mella_sharegpt.json`: ShareGPT/LLaVA conversations; register with LLaMA-Factory through",
        "  `dataset_info.json` (set `media_dir` to the lake root, where `images/` lives).",
        "- `data.parquet`: every record with provenance (page url, domain, image sha256).",
        "",
        "## Licence and opt-out",
        "Alt texts and images come from public web pages; pages that opt out of AI use (`noai`/`noimageai`) are",
        "excluded. Rights remain with the original authors; check them before redistribution.",
    ]
    return "\n".join(lines) + "\n"


def sharegpt_bytes(records: pl.DataFrame) -> bytes:
    return json.dumps(to_sharegpt(records), ensure_ascii=False, indent=1).encode("utf-8")
