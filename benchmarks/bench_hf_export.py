"""The 🤗 datasets Parquet parts of an export: our writer (pyarrow, the schema and ``huggingface`` metadata declared
in ``mella_assets/dataset/export.py``) against ``datasets``' own (``Dataset.from_dict`` with ``Image()`` features,
then ``to_parquet``) on the same records and image bytes.

Records: SFT rows of one language over JPEGs of 320×240 (random noise, so about the size of a real photo at that
size), four records per image, as the dataset stage makes them (know + ling, each image in several prompts). Both
writers' files are read back with ``datasets`` and give the same rows, images and features (asserted). rows/s =
records written per second; the notes give each file's size and the time ``load_dataset("parquet")`` takes on
ours. Writes ``benchmarks/results/hf_export.md`` too.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from benchmarks.harness import Row, compare, machine, measure
from mella_assets.dataset.export import HF_COLUMNS, hf_parquet_parts, hf_schema
from mella_assets.lib.lake import LakeStore

RESULTS = Path(__file__).resolve().parent / "results" / "hf_export.md"
RECORDS_PER_IMAGE = 4


def _jpeg(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def records_and_store(images: int, root: Path) -> tuple[pl.DataFrame, LakeStore]:
    """``images`` JPEGs in a local lake and ``RECORDS_PER_IMAGE`` records over each, in the mella_dataset shape."""
    rng, words = np.random.default_rng(0), random.Random(0)
    store = LakeStore(root)
    keys = []
    for n in range(images):
        keys.append(f"images/{n % 256:02x}/{n:064x}.jpg")
        store.put_bytes(keys[-1], _jpeg(rng))
    vocabulary = ["hrad", "most", "řeka", "kostel", "náměstí", "zima", "léto", "staré", "město", "tramvaj"]
    rows = []
    for n in range(images * RECORDS_PER_IMAGE):
        key = keys[n // RECORDS_PER_IMAGE]
        text = " ".join(words.choice(vocabulary) for _ in range(words.randint(5, 60)))
        rows.append(
            {
                "id": f"{n:032x}",
                "language": "cs",
                "source": "know" if n % 2 else "ling",
                "prompt": "Popište obrázek.",
                "text": text,
                "caption_en": "A photo.",
                "keywords": text.split()[:3],
                "alt_kind": "description",
                "source_table": "d_know",
                "image_sha256": key.rsplit("/", 1)[1][:-4],
                "image_key": key,
                "image_url": f"https://a.example/{n}.jpg",
                "page_url": f"https://a.example/page/{n}",
                "domain": "a.example",
            }
        )
    # Shuffled: in an export an image's records are far apart (sorted by source and id), not side by side.
    return pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=0), store


def run(quick: bool) -> list[Row]:
    import datasets

    images = 100 if quick else 500
    runs = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records, store = records_and_store(images, root / "lake")
        rows = records.height
        ours_path, theirs_path = root / "ours.parquet", root / "theirs.parquet"

        def ours() -> int:
            ((_, data),) = hf_parquet_parts(records, "train", 1 << 40, store.get_bytes, store.size)
            ours_path.write_bytes(data)
            return rows

        features = datasets.Features.from_arrow_schema(hf_schema())  # the same features for both

        def theirs() -> int:
            columns = {name: records[name].to_list() for name in HF_COLUMNS if name != "image"}
            keys = records["image_key"].to_list()
            columns["image"] = [{"bytes": store.get_bytes(k), "path": k} for k in keys]
            dataset = datasets.Dataset.from_dict(columns, features=features)
            dataset.to_parquet(str(theirs_path))
            return rows

        ours_rate, theirs_rate = measure(ours, runs=runs), measure(theirs, runs=runs)
        cache = root / "cache"
        started = time.perf_counter()
        mine = datasets.load_dataset("parquet", data_files=str(ours_path), cache_dir=str(cache))["train"]
        load_seconds = time.perf_counter() - started
        other = datasets.load_dataset("parquet", data_files=str(theirs_path), cache_dir=str(cache))["train"]
        assert mine.features == other.features and mine.num_rows == other.num_rows == rows
        raw = datasets.Image(decode=False)
        for a, b in zip(mine.cast_column("image", raw), other.cast_column("image", raw), strict=True):
            assert a == b
        row = compare(
            "🤗 Parquet parts (image bytes embedded)",
            "rows/s",
            ours_rate,
            theirs_rate,
            "datasets Dataset.from_dict + to_parquet",
            rows=rows,
            images=images,
            ours_mb=round(ours_path.stat().st_size / 1e6, 2),
            theirs_mb=round(theirs_path.stat().st_size / 1e6, 2),
            load_dataset_seconds=round(load_seconds, 2),
        )
    RESULTS.parent.mkdir(exist_ok=True)
    info = machine()
    RESULTS.write_text(
        "# 🤗 Parquet parts of an export\n\n"
        f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; load average before "
        f"{os.getloadavg()[0]:.1f}.\n\n"
        "| stage | ours rows/s (median, min–max) | baseline | baseline rows/s | ratio | runs |\n"
        "|---|---|---|---|---|---|\n"
        f"| {row.stage} | {row.ours:,.0f} ({row.ours_range[0]:,.0f}–{row.ours_range[1]:,.0f}) | {row.baseline_name} "
        f"| {row.baseline:,.0f} ({row.baseline_range[0]:,.0f}–{row.baseline_range[1]:,.0f}) | {row.ratio:.2f}× "
        f"| {row.runs} |\n\n"
        f"Notes: {', '.join(f'{k} {v}' for k, v in row.notes.items())}.\n",
        encoding="utf-8",
    )
    return [row]


if __name__ == "__main__":
    for result in run(quick=False):
        print(result.to_json())
