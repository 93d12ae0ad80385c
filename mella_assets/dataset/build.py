"""Merge D_know and D_ling into SFT records: native prompts, a deterministic mix, a leakage-free train/test split.

The split is assigned by *image cluster*: images with the same sha256 or a perceptual hash (dHash) within
``max_distance`` bits of each other form one cluster (union-find over candidate pairs), and a whole cluster is in
train or in test. The test set is a fixed number of clusters per language per source, picked by a stable hash
rank. Assignments persist: the previous ``mella_dataset`` table is read back, every image that was in test stays
in test, and only clusters made entirely of new images can join the test set, so a new crawl never moves an
existing test item into train (nor an existing train item into a newly grown test set).

The same rule holds across languages (the fine-tuned checkpoint is multilingual and agency photos recur across
sites): every other language's written ``mella_dataset`` is read through DuckDB, out of core, for the images that
are the same as or near duplicates of this language's (:func:`other_language_links`). A cluster linked to another
language's test image is test; a cluster linked to any other language's image is never drawn into a new test set;
clusters linked to the same cluster of another language are one cluster. :func:`cross_language_leaks` checks the
result over all languages.

Mix caps (per source, ling per know, per domain) keep records that were in the previous table first, then the
lowest stable hash rank; capped records go to ``mella_dataset_rejects`` with a reason.

Reject reasons (stable): ``empty_answer``, ``image_missing``, ``domain_cap``, ``source_cap``, ``ling_ratio_cap``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from mella_assets.languages import Language
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.lib.near_duplicates import cluster_images, near_links, parquet_sql
from mella_assets.tables import D_KNOW, D_LING, MELLA_DATASET, MELLA_DATASET_REJECTS

PROMPT_BANK_PATH = Path(__file__).resolve().parent.parent / "prompts" / "prompt_bank.json"
SPLIT_SALT = "mella-split-v2"
MIX_SALT = "mella-mix-v1"
IMAGE_TOKEN = "<image>"
SOURCES = ("know", "ling")
SPLITS = ("train", "test")

DATASET_SCHEMA = dict(MELLA_DATASET.columns)
# Columns every record must fill (the rest are provenance that some sources lack, e.g. keywords for ling).
REQUIRED_COLUMNS = ("id", "language", "source", "image_sha256", "image_key", "split_group", "split", "prompt", "text")
REJECTS_SCHEMA = dict(MELLA_DATASET_REJECTS.columns)


@dataclass(frozen=True)
class SplitPolicy:
    """How the test split is drawn (per language)."""

    test_groups_per_source: int = 4
    """Image clusters per source kind (know / ling) in the test split: a fixed-size, stratified test set."""
    max_test_share: float = 0.3
    """A language with few clusters keeps at most this share of a source's clusters in test (at least one)."""
    max_distance: int = 8
    """Largest dHash Hamming distance of two near-duplicates. Measured on the demo: a 3/4-size re-encoded copy
    lies 1–7 bits from its original, distinct pictures ≥ 9 bits apart (≥ 14 within one language)."""


@dataclass(frozen=True)
class MixPolicy:
    """Caps that shape the mix of a language's records (None / missing: no cap)."""

    max_per_source: dict[str, int] = field(default_factory=dict)
    """Most records per source kind, e.g. ``{"ling": 1000}``."""
    ling_per_know: float | None = None
    """Most ling records per know record (a ratio cap), e.g. 1.0 for at most as many ling as know."""
    max_per_domain: int | None = None
    """Most records (both sources) whose image came from one web domain, so one big site cannot dominate."""


@dataclass(frozen=True)
class DatasetBuild:
    """What :func:`build_sft_records` gives: the records, the rejected candidates and split statistics."""

    records: pl.DataFrame
    rejects: pl.DataFrame
    stats: dict[str, int]


# -- prompts --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_prompt_bank() -> dict:
    return json.loads(PROMPT_BANK_PATH.read_text(encoding="utf-8"))


def prompts_for(language: str, source: str) -> list[str]:
    """The native instructions of a language for a source kind (English where the bank has none)."""
    bank = load_prompt_bank()
    return (bank.get(language) or bank["en"])[source]


def _rank(salt: str, text: str) -> int:
    """A stable pseudo-random rank of a string (first 60 bits of its salted sha256)."""
    return int(hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()[:15], 16)


def record_id(language: str, source: str, image_sha256: str, text: str) -> str:
    return hashlib.sha256(f"{language}|{source}|{image_sha256}|{text}".encode()).hexdigest()[:20]


# The whole-column forms of the helpers above, for the 10^5-10^6 records of a partition: row by row in Python
# (iter_rows, f-string, hashlib) they were a fifth of build_sft_records at 1M rows (benchmarks/bench_dataset.py);
# DuckDB's sha256() over a concatenated column gives the same digests of the same UTF-8 bytes with no Python loop.


def sha256_hex(strings: pl.Series) -> pl.Series:
    """The hex sha256 of each string's UTF-8 bytes (null stays null), in order, computed in DuckDB."""
    frame = pl.DataFrame({"value": strings.cast(pl.String)})
    with duckdb.connect(":memory:") as connection:
        connection.register("strings", frame)
        # A plain projection keeps the input order (DuckDB's preserve_insertion_order, on by default).
        digests = connection.execute("SELECT sha256(value) AS digest FROM strings").pl()["digest"]
    return digests.cast(pl.String).alias(strings.name)


def ranks(salt: str, texts: pl.Series) -> pl.Series:
    """:func:`_rank` of every string of ``texts`` (Int64)."""
    hexes = sha256_hex(salt + ":" + texts.cast(pl.String).fill_null("None"))
    return hexes.str.slice(0, 15).str.to_integer(base=16).cast(pl.Int64).alias("_rank")


def record_ids(frame: pl.DataFrame, language: str) -> pl.Series:
    """:func:`record_id` of every row of ``frame`` (columns ``source``, ``image_sha256``, ``text``)."""
    keys = frame.select(
        pl.concat_str(
            pl.lit(language),
            pl.col("source").fill_null("None"),
            pl.col("image_sha256").fill_null("None"),
            pl.col("text").fill_null(""),
            separator="|",
        )
    ).to_series()
    return sha256_hex(keys).str.slice(0, 20).alias("id")


# What json.dumps(..., ensure_ascii=False) escapes in a string: the quote, the backslash and control characters.
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_JSON_ESCAPES |= {chr(code): f"\\u{code:04x}" for code in range(0x20) if chr(code) not in _JSON_ESCAPES}


def json_string(expr: pl.Expr) -> pl.Expr:
    """``expr`` as JSON string literals, exactly as :func:`json.dumps` with ``ensure_ascii=False`` writes them
    (null becomes ``null``)."""
    escaped = expr.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))
    return pl.when(expr.is_null()).then(pl.lit("null")).otherwise(pl.concat_str(pl.lit('"'), escaped, pl.lit('"')))


# -- near-duplicate clusters ----------------------------------------------------------------------------------


def near_duplicate_pairs(
    phashes: Sequence[str], max_distance: int, tile_rows: int = 128, tile_columns: int = 4096
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of 16-hex dHashes at most ``max_distance`` bits apart.

    Exact all-pairs XOR + popcount in numpy over tiles of ``tile_rows × tile_columns`` reused buffers, so the
    working set stays in cache; a tile with no close pair (almost all of them) skips the index extraction.
    Measured (benchmarks/bench_dataset.py) far faster than a band-join candidate search at the default 8-bit
    threshold, whose 7-bit bands make most pairs candidates, and ≈ 4-5x faster than whole row blocks of
    ``2048 × n`` (0.75 GB temporaries at 45k hashes); quadratic (≈ 1 s per 40k images here), so the clusters
    come from the band joins of ``lib/near_duplicates.py`` instead; this is their exact reference.
    """
    if len(phashes) < 2 or max_distance < 0:
        return []
    values = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    n = len(values)
    shape = (min(tile_rows, n), min(tile_columns, n))
    xor, bits, close = np.empty(shape, np.uint64), np.empty(shape, np.uint8), np.empty(shape, np.bool_)
    pairs: list[tuple[int, int]] = []
    for start in range(0, n - 1, tile_rows):
        rows = values[start : start + tile_rows, None]
        height = rows.shape[0]
        # only columns right of the tile's first row: every pair once (i < j filters the rest)
        for column in range(start + 1, n, tile_columns):
            right = values[None, column : column + tile_columns]
            width = right.shape[1]
            x, b, c = xor[:height, :width], bits[:height, :width], close[:height, :width]
            np.bitwise_xor(rows, right, out=x)
            np.bitwise_count(x, out=b)
            np.less_equal(b, max_distance, out=c)
            if not c.any():
                continue
            i, j = np.nonzero(c)
            i, j = i + start, j + column
            keep = i < j
            pairs += zip(i[keep].tolist(), j[keep].tolist(), strict=True)
    return pairs


class _UnionFind:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {item: item for item in items}

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # The smaller key wins, so the cluster key does not depend on the order of unions.
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


def image_clusters(images: pl.DataFrame, max_distance: int) -> dict[str, str]:
    """image_sha256 → cluster key (the smallest sha256 of the cluster) for rows of (image_sha256, phash).

    Images with the same perceptual hash, or hashes at most ``max_distance`` bits apart, are one cluster;
    an image without a valid 16-hex hash is a cluster of its own (by sha256). Computed by the band joins of
    ``lib/near_duplicates.py`` (DuckDB), not by comparing all pairs.
    """
    frame = images.select(pl.col("image_sha256").cast(pl.String), pl.col("phash").cast(pl.String))
    return dict(cluster_images(frame, max_distance).iter_rows())


# -- other languages ------------------------------------------------------------------------------------------

OTHER_LINKS_SCHEMA = {
    "image_sha256": pl.String,
    "other_language": pl.String,
    "other_image_sha256": pl.String,
    "other_split_group": pl.String,
    "other_split": pl.String,
}


def _partition_language(key: str) -> str:
    return key.split("/language=", 1)[1].split("/", 1)[0]


def _dataset_files(store: LakeStore, except_language: str | None = None) -> list[str]:
    """Locations of the written ``mella_dataset`` partitions (all, or all but one language's)."""
    keys = store.table_keys(MELLA_DATASET.name)
    return sorted(store.location(key) for key in keys if _partition_language(key) != except_language)


def other_language_links(store: LakeStore, language: str, images: pl.DataFrame, max_distance: int = 8) -> pl.DataFrame:
    """Every other language's ``mella_dataset`` rows whose image is one of ``images`` (rows of ``image_sha256``,
    ``phash``) or a near duplicate of one, read out of core through DuckDB over the written partitions:
    columns of :data:`OTHER_LINKS_SCHEMA` (``image_sha256`` is this language's image)."""
    files = _dataset_files(store, except_language=language)
    if not files or images.is_empty():
        return pl.DataFrame(schema=OTHER_LINKS_SCHEMA)
    own = images.select(pl.col("image_sha256").cast(pl.String), pl.col("phash").cast(pl.String)).unique()
    with duckdb.connect(":memory:") as connection:
        store.configure_duckdb(connection)
        connection.register("own_images", own)
        others = parquet_sql(files, "DISTINCT image_sha256, phash, language, split_group, split")
        links = near_links(connection, "SELECT * FROM own_images", others, max_distance)
    return links.select(list(OTHER_LINKS_SCHEMA)).cast(OTHER_LINKS_SCHEMA).unique().sort(list(OTHER_LINKS_SCHEMA))


def cross_language_leaks(store: LakeStore, language: str | None = None, max_distance: int = 8) -> pl.DataFrame:
    """Pairs (an image of one language, the same image or a near duplicate in another language) whose splits
    differ: a test image of any language in any language's train split. ``language``: only pairs with an image of
    that language; None: all. Read out of core through DuckDB over the written partitions; empty = no leak.
    Columns: ``language, image_sha256, split, other_language, other_image_sha256, other_split``."""
    schema = {"language": pl.String, "image_sha256": pl.String, "split": pl.String}
    schema |= {"other_language": pl.String, "other_image_sha256": pl.String, "other_split": pl.String}
    files = _dataset_files(store)
    if language is not None:
        own_files = [f for f in files if f not in _dataset_files(store, except_language=language)]
        other_files = [f for f in files if f not in own_files]
    else:
        own_files = other_files = files
    if not own_files or not other_files:
        return pl.DataFrame(schema=schema)
    columns = "DISTINCT language, image_sha256, phash, split"
    with duckdb.connect(":memory:") as connection:
        store.configure_duckdb(connection)
        links = near_links(connection, parquet_sql(own_files, columns), parquet_sql(other_files, columns), max_distance)
    leaks = links.filter((pl.col("language") != pl.col("other_language")) & (pl.col("split") != pl.col("other_split")))
    return leaks.select(list(schema)).cast(schema).unique().sort(list(schema))


# -- merge, mix, split ----------------------------------------------------------------------------------------


def _page_provenance(d_know: pl.DataFrame) -> pl.DataFrame:
    """One (page url, domain, image url) per image: the first page (by url) where the image was found."""
    columns = [c for c in ("page_url", "domain", "image_url") if c in d_know.columns]
    if d_know.is_empty() or not columns:
        return pl.DataFrame(schema={"image_sha256": pl.String, **{c: pl.String for c in columns}})
    # Select before sorting: the alt texts and keyword lists need not move.
    provenance = d_know.select("image_sha256", *columns).sort("image_sha256", *columns)
    return provenance.unique("image_sha256", keep="first")


def _column(frame: pl.DataFrame, name: str, dtype: pl.DataType = pl.String) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)


def merge_sources(d_know: pl.DataFrame, d_ling: pl.DataFrame, language: str) -> pl.DataFrame:
    """Candidate records of both sources with their provenance; ``text`` is the answer.

    ``know``: the native alt text and its ``alt_kind``; ``ling``: the translated caption, with the page and domain
    where its image was found (from D_know) so every record traces back to a web page.
    """
    parts = []
    if d_know.height:
        parts.append(
            d_know.select(
                pl.lit("know").alias("source"),
                pl.lit(D_KNOW.name).alias("source_table"),
                pl.col("image_sha256"),
                _column(d_know, "image_key"),
                _column(d_know, "phash"),
                pl.col("alt_text").alias("text"),
                pl.lit(None, dtype=pl.String).alias("caption_en"),
                _column(d_know, "keywords", pl.List(pl.String)),
                _column(d_know, "page_url"),
                _column(d_know, "domain"),
                _column(d_know, "image_url"),
                _column(d_know, "alt_kind"),
            )
        )
    if d_ling.height:
        provenance = _page_provenance(d_know)
        ling = d_ling.drop([c for c in ("page_url", "domain", "image_url") if c in d_ling.columns])
        ling = ling.join(provenance, on="image_sha256", how="left", maintain_order="left")
        parts.append(
            ling.select(
                pl.lit("ling").alias("source"),
                pl.lit(D_LING.name).alias("source_table"),
                pl.col("image_sha256"),
                _column(ling, "image_key"),
                _column(ling, "phash"),
                pl.col("text"),
                _column(ling, "caption_en"),
                pl.lit(None, dtype=pl.List(pl.String)).alias("keywords"),
                _column(ling, "page_url"),
                _column(ling, "domain"),
                _column(ling, "image_url"),
                pl.lit(None, dtype=pl.String).alias("alt_kind"),
            )
        )
    schema = {c: DATASET_SCHEMA[c] for c in ("source", "source_table", "image_sha256", "image_key", "phash", "text")}
    schema |= {c: DATASET_SCHEMA[c] for c in ("caption_en", "keywords", "page_url", "domain", "image_url", "alt_kind")}
    if not parts:
        return pl.DataFrame(schema=schema).with_columns(pl.lit(language).alias("language"), pl.lit("").alias("id"))
    frame = pl.concat([p.cast(schema) for p in parts], how="vertical").with_columns(pl.lit(language).alias("language"))
    return frame.with_columns(record_ids(frame, language))


def _reject(frame: pl.DataFrame, reason: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(reason).alias("reason")).select(list(REJECTS_SCHEMA))


def apply_mix(
    candidates: pl.DataFrame, mix: MixPolicy, previous_ids: set[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, rejects) after the caps of ``mix``; records in ``previous_ids`` are kept first, then by stable rank.

    Also rejects records with an empty answer (``empty_answer``) or no stored image (``image_missing``).
    """
    previous_ids = previous_ids or set()
    frame = candidates.unique("id", keep="first", maintain_order=True)
    frame = frame.with_columns(
        (~pl.col("id").is_in(sorted(previous_ids))).alias("_new"),
        ranks(MIX_SALT, frame["id"]),
    )
    frame = frame.sort("_new", "_rank")
    rejected = []
    empty = frame["text"].is_null() | (frame["text"].str.strip_chars().str.len_chars() == 0)
    rejected.append(_reject(frame.filter(empty), "empty_answer"))
    frame = frame.filter(~empty)
    missing = frame["image_key"].is_null() | (frame["image_key"] == "")
    rejected.append(_reject(frame.filter(missing), "image_missing"))
    frame = frame.filter(~missing)

    def cap(frame: pl.DataFrame, over: pl.Expr, limit: int, reason: str) -> pl.DataFrame:
        position = pl.int_range(pl.len()).over(over)
        rejected.append(_reject(frame.filter(position >= limit), reason))
        return frame.filter(position < limit)

    if mix.max_per_domain is not None:
        frame = cap(frame, pl.col("domain").fill_null(""), mix.max_per_domain, "domain_cap")
    for source, limit in sorted(mix.max_per_source.items()):
        chosen = frame.filter(pl.col("source") == source)
        rejected.append(_reject(chosen.slice(limit), "source_cap"))
        frame = frame.filter((pl.col("source") != source) | pl.col("id").is_in(chosen.head(limit)["id"].implode()))
    if mix.ling_per_know is not None:
        know_count = int((frame["source"] == "know").sum())
        limit = math.floor(mix.ling_per_know * know_count)
        ling = frame.filter(pl.col("source") == "ling")
        rejected.append(_reject(ling.slice(limit), "ling_ratio_cap"))
        frame = frame.filter((pl.col("source") != "ling") | pl.col("id").is_in(ling.head(limit)["id"].implode()))
    rejects = pl.concat([r.cast(REJECTS_SCHEMA) for r in rejected], how="vertical")
    return frame.drop("_new", "_rank"), rejects


def previous_splits(previous: pl.DataFrame | None) -> dict[str, str]:
    """image_sha256 → split from a previous ``mella_dataset`` table (test wins if an image was in both)."""
    if previous is None or previous.is_empty() or not {"image_sha256", "split"} <= set(previous.columns):
        return {}
    pairs = previous.select("image_sha256", "split").unique().sort("split")  # "test" < "train"
    return dict(pairs.unique("image_sha256", keep="first").iter_rows())


def assign_splits(
    records: pl.DataFrame,
    policy: SplitPolicy,
    previous: pl.DataFrame | None = None,
    others: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """``records`` with ``split_group`` (cluster key) and ``split``, plus statistics of the assignment.

    A cluster is test if any of its images was test before, or is (or nearly is) a test image of another
    language (``others``: :func:`other_language_links`); otherwise, per source kind, new clusters (no image seen
    before, none linked to another language's image) fill the test set up to ``test_groups_per_source`` in
    stable hash order. Everything else is train. Clusters linked to one cluster of another language are merged.
    """
    cluster_of = image_clusters(records.select("image_sha256", "phash"), policy.max_distance)
    links = others if others is not None else pl.DataFrame(schema=OTHER_LINKS_SCHEMA)
    links = links.filter(pl.col("image_sha256").is_in(list(cluster_of)))
    # Another language's cluster is a node keyed after every sha256 ("~" > hex), so a merged cluster keeps the
    # smallest sha256 of this language as its key.
    other_group = ("~" + links["other_language"] + "/" + links["other_split_group"].fill_null("")).to_list()
    union = _UnionFind([*set(cluster_of.values()), *other_group])
    for sha, group in zip(links["image_sha256"].to_list(), other_group, strict=True):
        union.union(cluster_of[sha], group)
    cluster_of = {sha: union.find(cluster) for sha, cluster in cluster_of.items()}
    before = previous_splits(previous)
    members: dict[str, list[str]] = defaultdict(list)
    for sha, cluster in cluster_of.items():
        members[cluster].append(sha)
    linked = {cluster_of[sha] for sha in links["image_sha256"].to_list()}
    other_test = {cluster_of[sha] for sha in links.filter(pl.col("other_split") == "test")["image_sha256"].to_list()}
    test = {c for c, shas in members.items() if any(before.get(sha) == "test" for sha in shas)}
    kept_from_before = set(test)
    test |= other_test
    moved_to_test = sum(1 for c in test for sha in members[c] if before.get(sha) == "train")
    new = {c for c, shas in members.items() if not any(sha in before for sha in shas)} - linked
    rank = {c: min(_rank(SPLIT_SALT, sha) for sha in shas) for c, shas in members.items()}
    with_cluster = records.with_columns(
        pl.col("image_sha256").replace_strict(cluster_of, return_dtype=pl.String).alias("split_group")
    )
    for source in SOURCES:
        clusters = set(with_cluster.filter(pl.col("source") == source)["split_group"].to_list())
        if len(clusters) < 2:
            continue  # one cluster cannot be split without emptying train
        target = min(
            policy.test_groups_per_source, max(1, math.floor(policy.max_test_share * len(clusters))), len(clusters) - 1
        )
        missing = target - len(test & clusters)
        if missing > 0:
            pool = sorted((clusters & new) - test, key=lambda c: (rank[c], c))
            test.update(pool[:missing])
    frame = with_cluster.with_columns(
        pl.when(pl.col("split_group").is_in(sorted(test)))
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )
    stats = {
        "clusters": len(members),
        "near_duplicate_images": sum(len(shas) - 1 for shas in members.values()),
        "test_clusters": len(test),
        "test_clusters_kept_from_previous": len(kept_from_before),
        "images_moved_train_to_test": moved_to_test,
        "clusters_shared_with_other_languages": len(linked),
        "test_clusters_from_other_languages": len(other_test - kept_from_before),
    }
    return frame, stats


def with_prompts(frame: pl.DataFrame, language: str) -> pl.DataFrame:
    """``frame`` with ``prompt`` (the source's bank prompt picked by the record id's first 32 bits) and
    ``conversation`` (the user turn with the image token, then the answer; the JSON text that
    ``json.dumps(..., ensure_ascii=False)`` writes), computed over whole columns."""
    bank = pl.concat(
        pl.DataFrame(
            {"source": source, "_choice": list(range(len(prompts))), "prompt": prompts},
            schema={"source": pl.String, "_choice": pl.Int64, "prompt": pl.String},
        )
        for source in SOURCES
        for prompts in [prompts_for(language, source)]
    )
    sizes = {source: len(prompts_for(language, source)) for source in SOURCES}
    size = pl.col("source").replace_strict(sizes, default=1, return_dtype=pl.Int64)
    choice = pl.col("id").str.slice(0, 8).str.to_integer(base=16).cast(pl.Int64) % size
    chosen = frame.with_columns(choice.alias("_choice")).join(
        bank, on=["source", "_choice"], how="left", maintain_order="left"
    )
    user = json_string(pl.lit(f"{IMAGE_TOKEN}\n") + pl.col("prompt"))
    conversation = pl.concat_str(
        pl.lit('[{"role": "user", "content": '),
        user,
        pl.lit('}, {"role": "assistant", "content": '),
        json_string(pl.col("text")),
        pl.lit("}]"),
    )
    return chosen.with_columns(conversation.alias("conversation")).drop("_choice")


def build_sft_records(
    d_know: pl.DataFrame,
    d_ling: pl.DataFrame,
    language: Language,
    split: SplitPolicy | None = None,
    mix: MixPolicy | None = None,
    previous: pl.DataFrame | None = None,
    others: pl.DataFrame | None = None,
) -> DatasetBuild:
    """SFT records of one language: native prompt, answer ``text`` (alt text for know, translated caption for
    ling), mix caps, and a train/test split by near-duplicate image cluster that honours ``previous`` and the
    other languages' splits (``others``: :func:`other_language_links`)."""
    code = language.code
    split = split or SplitPolicy()
    mix = mix or MixPolicy()
    candidates = merge_sources(d_know, d_ling, code)
    previous_ids = set(previous["id"].to_list()) if previous is not None and "id" in previous.columns else set()
    kept, rejects = apply_mix(candidates, mix, previous_ids)
    rejects = rejects.with_columns(pl.lit(code).alias("language"))
    split_frame, stats = assign_splits(kept, split, previous, others)
    records = with_prompts(split_frame, code).select(list(DATASET_SCHEMA)).cast(DATASET_SCHEMA).sort("source", "id")
    stats = {**stats, "candidates": candidates.height, "rejected": rejects.height}
    return DatasetBuild(records=records, rejects=rejects, stats=stats)


# -- facts the checks assert ----------------------------------------------------------------------------------


def split_leakage(frame: pl.DataFrame, max_distance: int = SplitPolicy.max_distance) -> int:
    """Image clusters (same sha256 or near-duplicate dHash, recomputed here) found in both splits; must be 0."""
    if frame.is_empty():
        return 0
    phash = frame["phash"] if "phash" in frame.columns else pl.Series("phash", [None] * frame.height, pl.String)
    images = pl.DataFrame({"image_sha256": frame["image_sha256"], "phash": phash})
    cluster_of = image_clusters(images, max_distance)
    clusters = frame.select(
        pl.col("image_sha256").replace_strict(cluster_of, return_dtype=pl.String).alias("cluster"), "split"
    )
    both = clusters.group_by("cluster").agg(pl.col("split").n_unique().alias("splits"))
    return int((both["splits"] > 1).sum())


def schema_problems(frame: pl.DataFrame, language: str | None = None) -> dict[str, str]:
    """Column → what is wrong with it (missing, wrong type, nulls in a required column, values out of domain)."""
    problems = {
        c: f"{frame.schema.get(c)} (expected {t})" for c, t in DATASET_SCHEMA.items() if frame.schema.get(c) != t
    }
    for column in REQUIRED_COLUMNS:
        if column in frame.columns and column not in problems and frame[column].null_count():
            problems[column] = f"{frame[column].null_count()} nulls"
    domains = {"source": SOURCES, "split": SPLITS} | ({"language": (language,)} if language else {})
    for column, allowed in domains.items():
        if column in frame.columns and column not in problems:
            bad = sorted({v for v in frame[column].unique().to_list() if v not in allowed}, key=str)
            if bad:
                problems[column] = f"values outside {list(allowed)}: {bad[:5]}"
    if "id" in frame.columns and "id" not in problems and frame["id"].n_unique() != frame.height:
        problems["id"] = f"{frame.height - frame['id'].n_unique()} duplicate ids"
    return problems


def duplicate_answer_rate(frame: pl.DataFrame) -> float:
    """Share of records whose answer (case- and space-normalised) repeats another record's of the same source."""
    if frame.is_empty():
        return 0.0
    normalised = frame.select(
        "source", pl.col("text").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias("norm")
    )
    repeated = normalised.select(pl.len().over("source", "norm") > 1)
    return round(float(repeated.to_series().mean()), 4)


# Answer length bounds in characters per source kind (non-blocking check): alt texts are short by nature;
# a detailed caption shorter than 10 characters or any answer above the bound is suspect.
ANSWER_LENGTH_BOUNDS = {"know": (3, 400), "ling": (10, 4000)}


def answers_out_of_bounds(frame: pl.DataFrame, bounds: dict[str, tuple[int, int]] | None = None) -> int:
    """Records whose answer length (characters) is outside the bounds of its source kind."""
    bounds = bounds or ANSWER_LENGTH_BOUNDS
    count = 0
    for source, (low, high) in bounds.items():
        lengths = frame.filter(pl.col("source") == source)["text"].str.len_chars()
        count += int(((lengths < low) | (lengths > high)).sum())
    return count


@dataclass(frozen=True)
class Purity:
    """Share of answers of one source kind that language ID confirms as the partition's language."""

    source: str
    records: int
    in_language: int
    wrong_labels: dict[str, int]

    @property
    def share(self) -> float:
        return 1.0 if self.records == 0 else round(self.in_language / self.records, 4)


def language_purity(frame: pl.DataFrame, language: Language, identifier: LanguageIdentifier) -> dict[str, Purity]:
    """Per source kind: how many answers ``identifier`` confirms as ``language`` (labels of the others)."""
    result = {}
    for source in SOURCES:
        texts = frame.filter(pl.col("source") == source)["text"].fill_null("").to_list()
        checks = identifier.check_many(texts, language) if texts else []
        wrong: dict[str, int] = defaultdict(int)
        for check in checks:
            if not check.ok:
                wrong[check.label] += 1
        result[source] = Purity(source, len(texts), sum(c.ok for c in checks), dict(sorted(wrong.items())))
    return result


def dataset_version(records: pl.DataFrame) -> str:
    """Content version of a set of records: a hash of their ids and splits."""
    digest = hashlib.sha256()
    for rid, split in records.select("id", "split").sort("id").iter_rows():
        digest.update(f"{rid}:{split}\n".encode())
    return digest.hexdigest()[:16]


def training_gate_problems(frame: pl.DataFrame, language: str, image_exists: Callable[[str], bool]) -> list[str]:
    """What would make one language's records unfit for training: the blocking checks of mella_dataset that
    need no model (schema, both splits present, no split leakage, every image file present). Empty = fit."""
    problems = [f"schema: {column} {problem}" for column, problem in schema_problems(frame, language).items()]
    if problems:
        return problems
    splits = set(frame["split"].unique().to_list())
    if not {"train", "test"} <= splits:
        problems.append(f"splits present: {sorted(splits)} (train and test needed)")
    if leaked := split_leakage(frame):
        problems.append(f"{leaked} image clusters in both train and test")
    missing = [key for key in frame["image_key"].unique().to_list() if not image_exists(key)]
    if missing:
        problems.append(f"{len(missing)} image files missing, e.g. {missing[0]}")
    return problems


def cross_language_problems(store: LakeStore, max_distance: int = SplitPolicy.max_distance) -> dict[str, list[str]]:
    """Per language, the cross-language split leaks of :func:`cross_language_leaks` over every written partition,
    in words for the training gate (a language without leaks is absent)."""
    leaks = cross_language_leaks(store, max_distance=max_distance)
    problems: dict[str, list[str]] = {}
    for (language, split), rows in leaks.sort("language", "split").group_by("language", "split", maintain_order=True):
        images = rows["image_sha256"].n_unique()
        where = ", ".join(sorted(set(rows["other_language"].to_list())))
        other = "train" if split == "test" else "test"
        problems.setdefault(str(language), []).append(
            f"{images} {split} images are (or nearly are) {other} images of another language ({where}), "
            f"e.g. {rows['image_sha256'][0]}"
        )
    return problems
