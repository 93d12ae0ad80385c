"""Exports of the SFT dataset for other trainers, with a manifest, checksums and a dataset card.

Layout of one export (``exports/<version>/``; every path in it is relative to this folder, the *media dir*)::

    sharegpt_{train,test}.json      ShareGPT / LLaVA conversations (LLaMA-Factory), human/gpt turns, ``images``
    dataset_info.json               LLaMA-Factory entries ``mella_train`` / ``mella_test`` for those files
    swift_{train,test}.jsonl        ms-swift standard ``messages`` (user/assistant) + ``images``
    data.parquet                    every record with provenance and ``image_path`` (optionally image bytes)
    data/<language>/<split>-NNNNN-of-MMMMM.parquet   🤗 datasets parts: ``image`` (``datasets.Image``, bytes
                                    embedded unless ``hf_embed_images`` is off), text, prompt and provenance; the
                                    card's front matter maps them to configs and splits (``load_dataset(<folder>)``)
    webdataset/mella-<split>-NNNNNN.tar   size-capped shards: ``<id>.jpg`` + ``<id>.json`` per sample
    webdataset/manifest.json        shards with split, samples, bytes, sha256
    images/<sha[:2]>/<sha>.jpg      the images (unless ``copy_images`` is off: then the lake root is the media dir)
    README.md                       the dataset card
    MANIFEST.json, SHA256SUMS       every file above with size and sha256 (``sha256sum -c SHA256SUMS``)

Files carry no timestamps, so the same records give byte-identical files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mella_assets.dataset.build import IMAGE_TOKEN, SPLITS
from mella_assets.know.alt_kind import KINDS
from mella_assets.lib.lake import LakeStore
from mella_assets.tables import MELLA_EXPORT

EXPORT_NAME = "mella"
TAR_BLOCK = 512
# The export's file list: the mella_export table's columns but its version, which the asset adds.
MANIFEST_SCHEMA = {c: t for c, t in MELLA_EXPORT.columns.items() if c != "version"}


@dataclass(frozen=True)
class ExportOptions:
    copy_images: bool = True
    """Copy the images into the export, so it is self-contained; off: paths are relative to the lake root."""
    embed_images_in_parquet: bool = False
    """Also store the image bytes in ``data.parquet`` (column ``image_bytes``)."""
    shard_max_bytes: int = 256 * 1024 * 1024
    """Most bytes of one WebDataset tar shard (a sample bigger than this gets a shard of its own)."""
    hf_embed_images: bool = True
    """Store the image bytes in the 🤗 Parquet parts under ``data/`` (what the Hub needs); off: only each image's
    path, relative to the media dir (smaller files for local use)."""
    hf_shard_max_bytes: int = 500 * 1000 * 1000
    """About the most bytes of one 🤗 Parquet part (images and texts counted; ``push_to_hub``'s default)."""
    license: str = "other"
    """The card's ``license`` (a Hub licence id, e.g. ``cc-by-4.0``). ``other``: the rights stay with each source,
    as the card's provenance section says."""
    license_name: str = "mella-web-sources"
    """The card's ``license_name`` when ``license`` is ``other``."""


# -- trainer formats ------------------------------------------------------------------------------------------


def _user_turn(prompt: str) -> str:
    return f"{IMAGE_TOKEN}{prompt}"


def to_sharegpt(records: pl.DataFrame) -> list[dict]:
    """ShareGPT / LLaVA records as LLaMA-Factory reads them: human/gpt turns, one ``<image>`` per image path."""
    return [
        {
            "id": row["id"],
            "language": row["language"],
            "source": row["source"],
            "conversations": [
                {"from": "human", "value": _user_turn(row["prompt"])},
                {"from": "gpt", "value": row["text"]},
            ],
            "images": [row["image_key"]],
        }
        for row in records.iter_rows(named=True)
    ]


def to_swift_messages(records: pl.DataFrame) -> list[dict]:
    """ms-swift's standard format: ``messages`` with user/assistant roles and ``images`` paths."""
    return [
        {
            "messages": [
                {"role": "user", "content": _user_turn(row["prompt"])},
                {"role": "assistant", "content": row["text"]},
            ],
            "images": [row["image_key"]],
            "id": row["id"],
            "language": row["language"],
            "source": row["source"],
        }
        for row in records.iter_rows(named=True)
    ]


def llama_factory_dataset_info(files: dict[str, str]) -> dict:
    """``dataset_info.json`` entries (``mella_<split>``) registering the ShareGPT files with LLaMA-Factory."""
    return {
        f"{EXPORT_NAME}_{split}": {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
        for split, file_name in files.items()
    }


def _json_bytes(value: object, indent: int | None = 1) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=indent).encode("utf-8")


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def parquet_bytes(records: pl.DataFrame, read_image: Callable[[str], bytes] | None = None) -> bytes:
    """The records as Parquet with ``image_path`` (relative to the media dir) and, given ``read_image``,
    the image bytes in ``image_bytes``."""
    frame = records.with_columns(pl.col("image_key").alias("image_path"))
    if read_image is not None:
        frame = frame.with_columns(
            pl.Series("image_bytes", [read_image(key) for key in frame["image_key"].to_list()], dtype=pl.Binary)
        )
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


# -- WebDataset -----------------------------------------------------------------------------------------------


def _sample_json(row: dict) -> dict:
    keep = ("id", "language", "source", "split", "prompt", "text", "caption_en", "keywords", "page_url", "domain")
    keep += ("alt_kind",)
    sample = {key: row.get(key) for key in keep}
    sample |= {"image_sha256": row["image_sha256"], "image_url": row.get("image_url")}
    return sample


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # no timestamps: reproducible shards
    tar.addfile(info, io.BytesIO(data))


def _tar_size(sizes: list[int]) -> int:
    """Bytes a tar of members of ``sizes`` takes: a header block per member, data padded to blocks, the end
    marker, and the whole padded to tarfile's record size (20 blocks)."""
    raw = sum(TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK for size in sizes) + 2 * TAR_BLOCK
    return -(-raw // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def webdataset_shards(
    records: pl.DataFrame, read_image: Callable[[str], bytes], split: str, max_bytes: int
) -> Iterator[tuple[str, bytes, int]]:
    """(shard name, tar bytes, samples) for one split: ``<id>.jpg`` + ``<id>.json`` per sample, each shard at
    most ``max_bytes`` (the tar's real size, headers and padding included) unless one sample alone is bigger."""
    members: list[tuple[str, bytes]] = []
    samples = shard = 0

    def flush() -> tuple[str, bytes, int]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                _tar_member(tar, name, data)
        return f"{EXPORT_NAME}-{split}-{shard:06d}.tar", buffer.getvalue(), samples

    for row in records.iter_rows(named=True):
        # The id is hex, so the key has no dot: WebDataset splits a member name into key and extension there.
        pair = [
            (f"{row['id']}.jpg", read_image(row["image_key"])),
            (f"{row['id']}.json", _json_bytes(_sample_json(row))),
        ]
        grown = _tar_size([len(d) for _, d in members + pair])
        if members and grown > max_bytes:
            yield flush()
            members, samples, shard = [], 0, shard + 1
        members += pair
        samples += 1
    if members:
        yield flush()


# -- 🤗 datasets: Parquet parts and the card's front matter ----------------------------------------------------

HF_DATA_DIR = "data"
# The Parquet parts' columns: the image (🤗 `Image`: a struct of bytes and path) and each record's text and
# provenance. The split is the file a row is in; `conversation` repeats prompt and text, so it is left out.
HF_COLUMNS = {
    "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    "id": pa.string(),
    "language": pa.string(),
    "source": pa.string(),
    "prompt": pa.string(),
    "text": pa.string(),
    "caption_en": pa.string(),
    "keywords": pa.list_(pa.string()),
    "alt_kind": pa.string(),
    "source_table": pa.string(),
    "image_sha256": pa.string(),
    "image_url": pa.string(),
    "page_url": pa.string(),
    "domain": pa.string(),
}
# Rows per Parquet row group: what `datasets` itself writes for image columns, so the Hub's viewer and a
# streaming reader fetch a few MB at a time.
HF_ROW_GROUP_ROWS = 100
# zstd for the texts; image bytes stored as they are: a JPEG does not shrink, and compressing it anyway cut the
# rows/s from 1.14x to 0.68x those of datasets' own writer (benchmarks/bench_hf_export.py). The dictionary stays:
# an image repeated in a row group (the know and ling records of one picture) is stored once there.
HF_COMPRESSION = {"image.bytes": "none"} | {c: "zstd" for c in ("image.path", *list(HF_COLUMNS)[1:])}
HF_TASK_CATEGORIES = ("image-text-to-text", "image-to-text", "visual-question-answering")
HF_TAGS = ("mella", "multilingual", "low-resource-languages", "alt-text", "image-captioning", "sft")
# The Hub's size_categories buckets: (exclusive upper bound of the row count, label).
HF_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
HF_CARD_KEYS = ("license", "language", "task_categories", "size_categories", "pretty_name", "tags", "configs")


def hf_schema() -> pa.Schema:
    """The Parquet parts' Arrow schema with the ``huggingface`` metadata `datasets` reads its features from (what
    ``datasets.Features(...).arrow_schema`` writes), so ``image`` loads as ``datasets.Image``."""

    def feature(name: str, kind: pa.DataType) -> dict:
        if name == "image":
            return {"_type": "Image"}
        if pa.types.is_list(kind):
            return {"feature": feature("", kind.value_type), "_type": "List"}
        return {"dtype": str(kind), "_type": "Value"}

    features = {name: feature(name, kind) for name, kind in HF_COLUMNS.items()}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(list(HF_COLUMNS.items()), metadata=metadata)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` label for ``rows`` records."""
    return next((label for bound, label in HF_SIZE_CATEGORIES if rows < bound), "n>1B")


def plan_shards(sizes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """(start, end) row ranges whose ``sizes`` add up to at most ``max_bytes`` each (a row bigger than that alone
    gets a range of its own); one empty range for no rows."""
    ranges, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > max_bytes:
            ranges.append((start, index))
            start, total = index, 0
        total += size
    ranges.append((start, len(sizes)))
    return ranges


def hf_parquet_parts(
    records: pl.DataFrame,
    name: str,
    max_bytes: int,
    read_image: Callable[[str], bytes] | None,
    image_size: Callable[[str], int],
) -> Iterator[tuple[str, bytes]]:
    """(``<name>-NNNNN-of-MMMMM.parquet``, Parquet bytes) for ``records``, each part about ``max_bytes`` at most
    (images and texts counted), in :func:`hf_schema`. ``read_image``: embed each image's bytes (what the Hub
    needs); None: only its path, relative to the media dir."""
    texts = records.select(pl.sum_horizontal(pl.col("prompt", "text").str.len_bytes())).to_series().to_list()
    sizes = [
        text + (image_size(key) if read_image else 0)
        for text, key in zip(texts, records["image_key"].to_list(), strict=True)
    ]
    ranges = plan_shards(sizes, max_bytes)
    schema = hf_schema()
    for number, (start, end) in enumerate(ranges):
        part = records.slice(start, end - start)
        keys = part["image_key"].to_list()
        image = pa.StructArray.from_arrays(
            [
                pa.array([read_image(k) for k in keys] if read_image else [None] * len(keys), pa.binary()),
                pa.array(keys),
            ],
            fields=list(schema.field("image").type),
        )
        columns = [image] + [
            part[column].to_arrow().cast(kind) if column in part.columns else pa.nulls(part.height, kind)
            for column, kind in list(HF_COLUMNS.items())[1:]
        ]
        buffer = io.BytesIO()
        table = pa.Table.from_arrays(columns, schema=schema)
        pq.write_table(table, buffer, compression=HF_COMPRESSION, row_group_size=HF_ROW_GROUP_ROWS)
        yield f"{name}-{number:05d}-of-{len(ranges):05d}.parquet", buffer.getvalue()


def card_front_matter(records: pl.DataFrame, parts: list[str], options: ExportOptions | None = None) -> str:
    """The card's YAML front matter (between ``---`` lines) that the Hub and ``datasets.load_dataset`` read:
    licence, languages, task and size categories, tags, and ``configs``: ``default`` with every language and one
    config per language, their ``train`` / ``test`` splits mapped to the Parquet ``parts`` (export-relative
    paths ``data/<language>/<split>-….parquet``)."""
    options = options or ExportOptions()
    languages = sorted(records["language"].unique().to_list())

    def data_files(language: str) -> list[dict[str, str]]:
        patterns = {split: f"{HF_DATA_DIR}/{language}/{split}-*.parquet" for split in SPLITS}
        return [
            {"split": split, "path": pattern}
            for split, pattern in patterns.items()
            if any(fnmatch.fnmatchcase(part, pattern) for part in parts)  # a split with no rows has no file
        ]

    configs = [{"config_name": "default", "data_files": data_files("*")}]
    configs += [{"config_name": code, "data_files": data_files(code)} for code in languages]
    meta: dict[str, object] = {"license": options.license}
    if options.license == "other":
        meta["license_name"] = options.license_name
    meta |= {
        "language": languages,
        "multilinguality": "multilingual" if len(languages) > 1 else "monolingual",
        "task_categories": list(HF_TASK_CATEGORIES),
        "size_categories": [size_category(records.height)],
        "pretty_name": f"MELLA image-text SFT data ({', '.join(languages)})",
        "tags": list(HF_TAGS),
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def card_metadata_problems(card: str, files: set[str]) -> list[str]:
    """What stops the Hub or ``datasets`` from reading the card of an export holding ``files`` (export-relative
    paths): no front matter, a missing key, a licence ``other`` without its name, a config split whose pattern
    matches no file. Parsed with ``huggingface_hub.DatasetCard`` when it is installed (the Hub's own reader)."""
    try:
        from huggingface_hub import DatasetCard

        meta = DatasetCard(card).data.to_dict()
    except ImportError:
        head = card.split("---\n", 2)
        meta = yaml.safe_load(head[1]) if card.startswith("---\n") and len(head) == 3 else {}
    except (ValueError, yaml.YAMLError) as error:  # not YAML, or YAML that is not a mapping
        return [f"front matter: {str(error).splitlines()[0]}"]
    if not meta:
        return ["the card has no YAML front matter"]
    problems = [f"front matter has no {key!r}" for key in HF_CARD_KEYS if not meta.get(key)]
    if meta.get("license") == "other" and not meta.get("license_name"):
        problems.append("license 'other' needs a 'license_name'")
    for config in meta.get("configs") or []:
        for entry in config.get("data_files") or []:
            if not any(fnmatch.fnmatchcase(path, entry["path"]) for path in files):
                problems.append(
                    f"config {config.get('config_name')!r} split {entry['split']!r}: no file matches {entry['path']!r}"
                )
    return problems


# -- dataset card ---------------------------------------------------------------------------------------------


def _table(frame: pl.DataFrame) -> list[str]:
    if frame.is_empty():
        return ["_(none)_"]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.iter_rows():
        cells = [("" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def card_statistics(records: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The tables of the card computed from the records: counts, answer lengths, top domains."""
    counts = (
        records.group_by("language")
        .agg(
            *[
                ((pl.col("source") == s) & (pl.col("split") == p)).sum().alias(f"{s}_{p}")
                for s in ("know", "ling")
                for p in SPLITS
            ],
            pl.len().alias("records"),
            pl.col("image_sha256").n_unique().alias("images"),
        )
        .sort("language")
    )
    lengths = (
        records.with_columns(pl.col("text").str.len_chars().alias("chars"))
        .group_by("language", "source")
        .agg(
            pl.col("chars").min().alias("min"),
            pl.col("chars").quantile(0.1, "nearest").alias("p10"),
            pl.col("chars").median().alias("median"),
            pl.col("chars").quantile(0.9, "nearest").alias("p90"),
            pl.col("chars").max().alias("max"),
        )
        .sort("language", "source")
    )
    domains = (
        records.filter(pl.col("domain").is_not_null())
        .group_by("domain")
        .agg(
            pl.col("language").unique().sort().str.join(",").alias("languages"),
            pl.len().alias("records"),
            pl.col("image_sha256").n_unique().alias("images"),
        )
        .sort(["records", "domain"], descending=[True, False])
        .head(10)
    )
    return {"counts": counts, "lengths": lengths, "domains": domains, "alt_kinds": alt_kind_shares(records)}


def alt_kind_shares(records: pl.DataFrame) -> pl.DataFrame:
    """Per language, the share (percent) of its ``know`` records whose alt text is each kind (``alt_kind``:
    caption, headline, description; ``unknown`` where none was recorded), and the number of know records."""
    know = records.filter(pl.col("source") == "know")
    if "alt_kind" not in know.columns:
        know = know.with_columns(pl.lit(None, dtype=pl.String).alias("alt_kind"))
    kind = pl.col("alt_kind").fill_null("unknown")
    return (
        know.group_by("language")
        .agg(
            pl.len().alias("know_records"),
            *[((kind == k).mean() * 100).alias(f"{k} %") for k in (*KINDS, "unknown")],
        )
        .sort("language")
    )


def _yield_section(yield_funnel: pl.DataFrame | None) -> list[str]:
    """The card's yield funnel: per language (every crawl together: a column per crawl would make a card of eight
    languages unreadable; the SQL view has them), each step's rows and their share of the step before."""
    lines = [
        "",
        "## Yield",
        "",
        "How many rows each step gives from the step before, per language: rows, and in brackets rows ÷ the previous",
        "step's rows (`candidates`: `<img>` candidates per page). Pages needed for N records ≈ N ÷ (`sft_records` ÷",
        '`pages`). Per crawl in `mella sql "SELECT * FROM yield_by_language"` (`all`: every crawl together).',
        "",
    ]
    if yield_funnel is None or not yield_funnel.height:
        return [*lines, "_(no pages in the lake)_"]
    cells = yield_funnel.filter(pl.col("crawl") == "all").with_columns(
        column=pl.col("language"),
        cell=pl.when(pl.col("ratio_to_previous").is_null())
        .then(pl.col("rows").cast(pl.String))
        .otherwise(pl.format("{} (×{})", "rows", pl.col("ratio_to_previous").round(3))),
    )
    wide = cells.pivot(on="column", index=["step", "stage"], values="cell", sort_columns=True)
    return [*lines, *_table(wide.sort("step").drop("step"))]


def dataset_card(
    records: pl.DataFrame,
    version: str,
    funnel: pl.DataFrame | None = None,
    rejects: pl.DataFrame | None = None,
    options: ExportOptions | None = None,
    yield_funnel: pl.DataFrame | None = None,
) -> str:
    """README.md of an export with the run's statistics; ``funnel`` / ``rejects`` / ``yield_funnel``: the catalog
    views ``funnel_by_language``, ``rejects_by_reason`` and ``yield_by_language``."""
    options = options or ExportOptions()
    stats = card_statistics(records)
    by_split = {p: int((records["split"] == p).sum()) for p in SPLITS}
    languages = sorted(records["language"].unique().to_list())
    lines = [
        f"# MELLA dataset, export `{version}`",
        "",
        "Multilingual image–text supervised fine-tuning data built with the MELLA method (arXiv 2508.05502):",
        "`know` records pair an image with its **native alt text** from a web page in the language (cultural",
        "knowledge); `ling` records pair it with a **machine-translated detailed caption** (linguistic fluency).",
        "Each record is one user turn (an instruction in the language from a native prompt bank + the image) and",
        "one assistant turn (the answer).",
        "",
        f"**{records.height} records**, {records['image_sha256'].n_unique()} distinct images, "
        f"{len(languages)} languages ({', '.join(languages)}); train {by_split['train']}, test {by_split['test']}.",
        "",
        "## Records per language, source and split",
        "",
        *_table(stats["counts"]),
        "",
        "## Answer length (characters)",
        "",
        *_table(stats["lengths"]),
        "",
        "## Alt-text kinds (`know` records)",
        "",
        "What kind of text each native alt text is, judged from the page it came from: a **caption** (the image",
        "has a `<figcaption>` or photo-caption markup), a **headline** (the alt repeats the title of the link or",
        "heading beside the image: a teaser image), or a **description** (anything else). Headlines name an",
        "article rather than describe its picture; `MELLA_DKNOW_MAX_HEADLINE_SHARE` caps their share.",
        "",
        *_table(stats["alt_kinds"]),
        "",
        "## Top web domains",
        "",
        "Domain of the page the image was found on (for `ling` records: the image's first page).",
        "",
        *_table(stats["domains"]),
        "",
        "## Filter funnel",
        "",
        "Rows kept and rejected at each stage of the pipeline, per language (`raw_crawl_images`: every `<img>`",
        "candidate on the crawled pages). Every rejected row is kept in a `*_rejects` table with its reason.",
        "",
    ]
    if funnel is not None and funnel.height:
        wide = funnel.with_columns(pl.format("{} / {}", "kept", "rejected").alias("kept / rejected")).pivot(
            on="language", index=["step", "stage"], values="kept / rejected", sort_columns=True
        )
        lines += _table(wide.sort("step").drop("step"))
    else:
        lines += ["_(no pipeline tables found)_"]
    lines += ["", "Reject reasons (all languages):", ""]
    if rejects is not None and rejects.height:
        reasons = (
            rejects.group_by("stage", "reason")
            .agg(pl.col("rows").sum())
            .sort(["stage", "rows", "reason"], descending=[False, True, False])
        )
        lines += _table(reasons)
    else:
        lines += ["_(no rejects recorded)_"]
    lines += _yield_section(yield_funnel)
    media = "this folder" if options.copy_images else "the lake root (images are not copied into this export)"
    lines += [
        "",
        "## Splits",
        "",
        "Train and test are assigned by image *cluster*: identical images and near-duplicates (perceptual dHash",
        "within a few bits, e.g. a resized or re-encoded copy) are one cluster, and a cluster is wholly in train",
        "or in test. The test set is a fixed number of clusters per language and source, chosen by a stable hash,",
        "and an image once in test stays in test when new data arrives.",
        "",
        "## Files and how to load them",
        "",
        f"Image paths are relative to the media dir: {media}.",
        "",
        '- **🤗 datasets**: `load_dataset("<this folder or the Hub repo>")` reads the `configs` above (`default`:',
        "  every language; one config per language code) from `data/<language>/<split>-NNNNN-of-MMMMM.parquet`;",
        "  `image` is a `datasets.Image`"
        + (
            " (bytes embedded)."
            if options.hf_embed_images
            else " holding only a path relative to the media dir: decode it from there."
        ),
        "- **LLaMA-Factory**: `sharegpt_train.json` / `sharegpt_test.json`, registered in `dataset_info.json` as",
        "  `mella_train` / `mella_test`; train with `dataset_dir: <this folder>`, `dataset: mella_train`",
        "  (`media_dir` defaults to `dataset_dir`).",
        "- **ms-swift**: `swift_train.jsonl` / `swift_test.jsonl` (standard `messages` + `images`); run",
        "  `swift sft --dataset swift_train.jsonl --val_dataset swift_test.jsonl` from this folder.",
        "- **Parquet**: `data.parquet` (all records, provenance columns, `image_path`"
        + (", `image_bytes`)" if options.embed_images_in_parquet else ")")
        + ": `polars.read_parquet(\"data.parquet\")` or `SELECT * FROM 'data.parquet'` in DuckDB.",
        "- **WebDataset**: `webdataset/mella-<split>-NNNNNN.tar` (`<id>.jpg` + `<id>.json` per sample), listed in",
        "  `webdataset/manifest.json`: `webdataset.WebDataset(urls, shardshuffle=False).decode('pil')`.",
        "- `MANIFEST.json` and `SHA256SUMS` list every file with its size and sha256 (`sha256sum -c SHA256SUMS`).",
        "",
        "## Provenance, licence and opt-out",
        "",
        "Every record keeps the page URL, domain, image URL and image sha256 it came from (`data.parquet`,",
        "WebDataset JSON), and its source table (`d_know` / `d_ling`). Alt texts and images come from public web",
        "pages; pages that opt out of AI use (`noai` / `noimageai` in their robots meta tag) and URLs that",
        "robots.txt disallows are not used (they are recorded as rejects). Rights remain with the original",
        "authors and sites: this dataset grants no licence to the images or texts; check the terms of each",
        "source before redistribution or commercial use. To have content removed, filter it by `page_url` or",
        "`domain` and re-export. `ling` answers are machine translations of machine-written captions.",
    ]
    return "\n".join(lines) + "\n"


# -- the whole export -----------------------------------------------------------------------------------------


def write_export(
    store: LakeStore,
    prefix: str,
    records: pl.DataFrame,
    version: str,
    options: ExportOptions | None = None,
    funnel: pl.DataFrame | None = None,
    rejects: pl.DataFrame | None = None,
    yield_funnel: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Write every export file under ``prefix`` in ``store``; returns the manifest (path, key, kind, bytes,
    sha256), also written as ``MANIFEST.json`` and ``SHA256SUMS``."""
    options = options or ExportOptions()
    records = records.sort("language", "source", "id")
    written: list[tuple[str, str, int, str]] = []

    def put(path: str, data: bytes, kind: str) -> None:
        store.put_bytes(f"{prefix}/{path}", data)
        written.append((path, kind, len(data), hashlib.sha256(data).hexdigest()))

    cache: dict[str, bytes] = {}

    def read_image(key: str) -> bytes:
        if key not in cache:
            cache.clear()  # consecutive records often share an image; keep one, not the whole set, in memory
            cache[key] = store.get_bytes(key)
        return cache[key]

    if options.copy_images:
        for key in sorted(records["image_key"].unique().to_list()):
            put(key, store.get_bytes(key), "image")
    by_split = {split: records.filter(pl.col("split") == split) for split in SPLITS}
    for split, frame in by_split.items():
        put(f"sharegpt_{split}.json", _json_bytes(to_sharegpt(frame)), "sharegpt")
        put(f"swift_{split}.jsonl", _jsonl_bytes(to_swift_messages(frame)), "swift")
    info = llama_factory_dataset_info({split: f"sharegpt_{split}.json" for split in SPLITS})
    put("dataset_info.json", _json_bytes(info, indent=2), "llamafactory")
    put("data.parquet", parquet_bytes(records, read_image if options.embed_images_in_parquet else None), "parquet")
    parts = []
    embed = read_image if options.hf_embed_images else None
    for frame in records.partition_by("language", "split", maintain_order=True):
        language, split = frame["language"][0], frame["split"][0]
        for name, data in hf_parquet_parts(frame, split, options.hf_shard_max_bytes, embed, store.size):
            parts.append(f"{HF_DATA_DIR}/{language}/{name}")
            put(parts[-1], data, "hf_parquet")
    shards = []
    for split, frame in by_split.items():
        for name, data, samples in webdataset_shards(frame, read_image, split, options.shard_max_bytes):
            put(f"webdataset/{name}", data, "webdataset")
            shards.append(
                {"path": name, "split": split, "samples": samples, "bytes": len(data), "sha256": written[-1][3]}
            )
    put("webdataset/manifest.json", _json_bytes({"version": version, "shards": shards}, indent=2), "webdataset")
    card = card_front_matter(records, parts, options) + dataset_card(
        records, version, funnel, rejects, options, yield_funnel
    )
    put("README.md", card.encode("utf-8"), "card")
    listing = [{"path": p, "kind": k, "bytes": b, "sha256": s} for p, k, b, s in written]
    manifest = {"version": version, "records": records.height, "files": listing}
    sums = "".join(f"{s}  {p}\n" for p, _k, _b, s in written).encode()
    put("MANIFEST.json", _json_bytes(manifest, indent=2), "manifest")
    put("SHA256SUMS", sums, "manifest")
    rows = [{"path": p, "key": f"{prefix}/{p}", "kind": k, "bytes": b, "sha256": s} for p, k, b, s in written]
    return pl.DataFrame(rows, schema=MANIFEST_SCHEMA)
