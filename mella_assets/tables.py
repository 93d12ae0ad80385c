"""The table registry: one declaration per table of the lake — name, columns and types, partitioning, the stage
and asset that write it, and its rejects table. Everything else derives from it: the asset specs
(``mella_assets/specs.py``), the lake's reads and writes, the SQL catalog's views and funnel, the jobs' selections,
and the tests that keep code and registry in step (docs/architecture.md, "The table contract").

Dagster-free: lib code and the command line read it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

STAGES = ("crawl", "know", "ling", "dataset", "training", "evaluation")


class SchemaMismatch(ValueError):
    """A frame written to a table does not have the table's declared columns."""


@dataclass(frozen=True)
class Table:
    """One table of the lake. ``writer`` is the asset (op) that writes it; a rejects table names the table whose
    rows it holds the rejected counterpart of (``rejects_of``). A ``sharded`` table (a per-page stage) is
    partitioned language × shard: one Parquet file per (language, shard), read per shard or as a whole language. A
    ``by_crawl`` table is partitioned by Common Crawl crawl (dynamic partitions) and stored by crawl, language and
    shard."""

    name: str
    stage: str
    columns: Mapping[str, pl.DataType]
    description: str
    partitioned: bool = True
    sharded: bool = False
    by_crawl: bool = False
    writer: str = ""
    rejects_of: str | None = None
    kinds: tuple[str, ...] = ("parquet",)
    reason_column: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"table {self.name!r}: unknown stage {self.stage!r}")
        if not self.writer:
            object.__setattr__(self, "writer", self.name)
        if self.sharded and not self.partitioned:
            raise ValueError(f"table {self.name!r}: a sharded table is partitioned by language too")
        if self.rejects_of and "reason" not in self.columns:
            raise ValueError(f"rejects table {self.name!r} has no `reason` column")

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema(dict(self.columns))

    @property
    def is_rejects(self) -> bool:
        return self.rejects_of is not None

    def empty(self) -> pl.DataFrame:
        """A frame with no rows and the declared columns."""
        return pl.DataFrame(schema=self.schema)

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with exactly the declared columns, in declared order, of the declared types.

        A frame with rows must already have every declared column and no other (a missing or extra column is a
        :class:`SchemaMismatch` naming it); columns are only reordered and, where a column came out all-null
        (type ``Null``), cast. An empty frame takes the declared schema whatever its columns."""
        if frame.height == 0:
            return self.empty()
        missing = [c for c in self.columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in self.columns]
        if missing or extra:
            raise SchemaMismatch(
                f"table {self.name!r}: missing columns {missing}, undeclared columns {extra} "
                "(declare them in mella_assets/tables.py)"
            )
        wrong = [
            f"{c}: {frame.schema[c]} (declared {dtype})"
            for c, dtype in self.columns.items()
            if frame.schema[c] != dtype and frame.schema[c] != pl.Null
        ]
        if wrong:
            raise SchemaMismatch(f"table {self.name!r}: columns of another type: {', '.join(wrong)}")
        return frame.select([pl.col(c).cast(dtype) for c, dtype in self.columns.items()])


# One image candidate of a page, as `raw_crawl` holds it (built by crawl/html/extract.py).
IMAGE_CANDIDATE = pl.Struct(
    {
        "image_url": pl.String,
        "alt_raw": pl.String,
        "title_attr": pl.String,
        "width_attr": pl.Int64,
        "height_attr": pl.Int64,
        "source_attr": pl.String,
        "context_text": pl.String,
        "src_url": pl.String,
        "context_source": pl.String,
        # Evidence of the alt text's kind (know/alt_kind.py): link text, nearby heading, photo-caption markup.
        "link_text": pl.String,
        "nearby_heading": pl.String,
        "caption_markup": pl.String,
    }
)
# The page fields each image candidate carries into the know stage.
CANDIDATE_PAGE_COLUMNS = {
    "page_url": pl.String,
    "domain": pl.String,
    "html_lang": pl.String,
    "og_locale": pl.String,
    # The site's name and the page title: evidence that an alt text names the site (know/boilerplate.py).
    "title": pl.String,
    "site_name": pl.String,
    "warc_uri": pl.String,
    "record_offset": pl.Int64,
    "opt_out": pl.Boolean,
    "opt_out_source": pl.String,
}
# A candidate with its cleaned alt text and page-language prior: what alt_text_pairs keeps and rejects share.
_ALT_TEXT_CANDIDATE_COLUMNS = {
    **CANDIDATE_PAGE_COLUMNS,
    **{f.name: f.dtype for f in IMAGE_CANDIDATE.fields},
    "alt_text": pl.String,
    "page_language": pl.String,
    "alt_kind": pl.String,  # caption, headline or description (know/alt_kind.py); null without an alt text
}
# A translation with its QA measurements: what translations keeps and translation_rejects (+ reason) share.
_TRANSLATION_COLUMNS = {
    "language": pl.String,
    "image_sha256": pl.String,
    "caption_en": pl.String,
    "text": pl.String,
    "translator_id": pl.String,
    "target_code": pl.String,
    "qa_detected_language": pl.String,
    "qa_language_confidence": pl.Float64,
    "qa_language_ok": pl.Boolean,
    "qa_length_ratio": pl.Float64,
    "qa_repeated_trigrams": pl.Float64,
    "qa_copied_share": pl.Float64,
}


CRAWL_SOURCES = Table(
    "crawl_sources",
    stage="crawl",
    columns={
        "language": pl.String,
        "uri": pl.String,
        "key": pl.String,
        "path": pl.String,
        "size": pl.Int64,
        "sha256": pl.String,
        "origin": pl.String,
        "registered_at": pl.String,
    },
    description=(
        "Registered crawl files of the language: WARCs in `landing/<code>/` and the paths/URLs listed in "
        "`sources/<code>.txt`, with size and sha256."
    ),
)

CRAWL_SOURCE_REJECTS = Table(
    "crawl_source_rejects",
    stage="crawl",
    columns={
        "language": pl.String,
        "uri": pl.String,
        "reason": pl.String,
        "http_status": pl.Int64,
    },
    description="Registered sources that could not be stored (download errors, size caps), with the reason.",
    writer="crawl_sources",
    rejects_of="crawl_sources",
)

CC_SELECTION = Table(
    "cc_selection",
    stage="crawl",
    columns={
        "url": pl.String,
        "warc_filename": pl.String,
        "warc_record_offset": pl.Int64,
        "warc_record_length": pl.Int64,
        "language": pl.String,
        "shard": pl.String,
        "crawl": pl.String,
    },
    description=(
        "The pages of a Common Crawl crawl in the registry's languages, chosen from its columnar index (status 200 "
        "HTML, primary content language, or none declared on a national domain), by language and shard; "
        "`raw_crawl` reads their records by HTTP range."
    ),
    partitioned=False,
    by_crawl=True,
)

RAW_CRAWL = Table(
    "raw_crawl",
    stage="crawl",
    columns={
        "warc_uri": pl.String,
        "record_offset": pl.Int64,
        "page_url": pl.String,
        "domain": pl.String,
        "http_status": pl.Int64,
        "charset": pl.String,
        "html_lang": pl.String,
        "og_locale": pl.String,
        "title": pl.String,
        "site_name": pl.String,  # og:site_name
        "fetch_date": pl.String,
        "opt_out": pl.Boolean,
        "opt_out_source": pl.String,
        "charset_source": pl.String,
        "images": pl.List(IMAGE_CANDIDATE),
        "language": pl.String,
    },
    description=(
        "One row per HTML page of the language's WARCs with every unfiltered `<img>` candidate "
        "(src/srcset/data-src/`<picture>`, resolved against `<base href>`)."
    ),
    sharded=True,
)

ALT_TEXT_PAIRS = Table(
    "alt_text_pairs",
    stage="know",
    columns={
        **_ALT_TEXT_CANDIDATE_COLUMNS,
        "detected_language": pl.String,
        "language_confidence": pl.Float64,
        "language": pl.String,
    },
    description="(image url, native alt text) pairs that pass the language-aware text filters.",
    sharded=True,
)

ALT_TEXT_REJECTS = Table(
    "alt_text_rejects",
    stage="know",
    columns={**_ALT_TEXT_CANDIDATE_COLUMNS, "reason": pl.String, "language": pl.String},
    description=(
        "Image candidates the alt-text filters dropped, with the reason (missing/empty alt, file name, "
        "boilerplate, length, wrong language, duplicate, opt-out…)."
    ),
    writer="alt_text_pairs",
    rejects_of="alt_text_pairs",
    sharded=True,
)

IMAGES = Table(
    "images",
    stage="know",
    columns={
        "language": pl.String,
        "image_url": pl.String,
        "image_sha256": pl.String,
        "phash": pl.String,
        "width": pl.Int64,
        "height": pl.Int64,
        "format": pl.String,
        "bytes": pl.Int64,
        "image_key": pl.String,
        "http_status": pl.Int64,
        "final_url": pl.String,
        "fetched_sha256": pl.String,
        "duplicate": pl.String,
        "fetched_phash": pl.String,
    },
    description=(
        "Images of the kept alt texts, downloaded with the SSRF guard, validated, re-encoded and stored by sha256."
    ),
    sharded=True,
)

IMAGE_REJECTS = Table(
    "image_rejects",
    stage="know",
    columns={
        "language": pl.String,
        "image_url": pl.String,
        "reason": pl.String,
        "detail": pl.String,
        "http_status": pl.Int64,
        "limits_hash": pl.String,
    },
    description=(
        "Image URLs that could not be fetched or failed validation, with the reason, HTTP status and the limits"
        " they were judged by."
    ),
    writer="images",
    rejects_of="images",
    sharded=True,
)

D_KNOW = Table(
    "d_know",
    stage="know",
    columns={
        "language": pl.String,
        "image_sha256": pl.String,
        "image_key": pl.String,
        "phash": pl.String,
        "alt_text": pl.String,
        "keywords": pl.List(pl.String),
        "page_url": pl.String,
        "domain": pl.String,
        "image_url": pl.String,
        "alt_kind": pl.String,  # caption, headline or description (know/alt_kind.py)
    },
    description="D_know: a stored image, its native alt text and keywords — the cultural-knowledge pairs.",
)

MLLM_CAPTIONS = Table(
    "mllm_captions",
    stage="ling",
    columns={
        "language": pl.String,
        "image_sha256": pl.String,
        "image_key": pl.String,
        "domain": pl.String,
        "model_id": pl.String,
        "model_version": pl.String,
        "prompt_version": pl.String,
        "caption_en": pl.String,
        "prompt_tokens": pl.Int64,
        "new_tokens": pl.Int64,
    },
    description=(
        "English captions of the language's stored images from the captioning MLLM (cached by image, model, "
        "prompt and settings)."
    ),
    kinds=("parquet", "pytorch"),
)

CAPTION_REJECTS = Table(
    "caption_rejects",
    stage="ling",
    columns={
        "language": pl.String,
        "image_sha256": pl.String,
        "image_key": pl.String,
        "reason": pl.String,
        "detail": pl.String,
    },
    description=(
        "Images the captioner could not caption (unreadable image, refused or failed generation, not reached by the"
        " stage deadline), with the reason; retried on the next run."
    ),
    writer="mllm_captions",
    rejects_of="mllm_captions",
)

TRANSLATIONS = Table(
    "translations",
    stage="ling",
    columns=_TRANSLATION_COLUMNS,
    description="Captions machine-translated into the language, with their QA measurements.",
    kinds=("parquet", "pytorch"),
)

TRANSLATION_REJECTS = Table(
    "translation_rejects",
    stage="ling",
    columns={**_TRANSLATION_COLUMNS, "reason": pl.String},
    description=(
        "Translations that failed QA (empty, repetition loop, untranslated copy, length ratio, wrong language),"
        " or were refused, failed or not reached by the stage deadline (retried on the next run), with the reason."
    ),
    writer="translations",
    rejects_of="translations",
)

D_LING = Table(
    "d_ling",
    stage="ling",
    columns={
        "language": pl.String,
        "image_sha256": pl.String,
        "image_key": pl.String,
        "phash": pl.String,
        "text": pl.String,
        "caption_en": pl.String,
    },
    description=(
        "D_ling: a stored image, its translated caption (`text`) and the English source — the linguistic-fluency pairs."
    ),
)

MELLA_DATASET = Table(
    "mella_dataset",
    stage="dataset",
    columns={
        "id": pl.String,
        "language": pl.String,
        "source": pl.String,
        "source_table": pl.String,
        "image_sha256": pl.String,
        "image_key": pl.String,
        "phash": pl.String,
        "split_group": pl.String,
        "split": pl.String,
        "prompt": pl.String,
        "text": pl.String,
        "caption_en": pl.String,
        "keywords": pl.List(pl.String),
        "page_url": pl.String,
        "domain": pl.String,
        "image_url": pl.String,
        "alt_kind": pl.String,  # of a know record's alt text (know/alt_kind.py); null for ling
        "conversation": pl.String,
    },
    description="SFT records with native prompts and a train/test split by image cluster.",
)

MELLA_DATASET_REJECTS = Table(
    "mella_dataset_rejects",
    stage="dataset",
    columns={
        "language": pl.String,
        "source": pl.String,
        "image_sha256": pl.String,
        "text": pl.String,
        "page_url": pl.String,
        "domain": pl.String,
        "reason": pl.String,
    },
    description="Pairs left out of the dataset by the mix caps, with the reason.",
    writer="mella_dataset",
    rejects_of="mella_dataset",
)

MELLA_EXPORT = Table(
    "mella_export",
    stage="dataset",
    columns={
        "path": pl.String,
        "key": pl.String,
        "kind": pl.String,
        "bytes": pl.Int64,
        "sha256": pl.String,
        "version": pl.String,
    },
    description=(
        "The files of the latest dataset export (`exports/<version>/`): ShareGPT/LLaVA JSON, ms-swift JSONL, "
        "Parquet, WebDataset shards, dataset card."
    ),
    partitioned=False,
    kinds=("json", "parquet"),
)

FINETUNED_CHECKPOINT = Table(
    "finetuned_checkpoint",
    stage="training",
    columns={
        "checkpoint_key": pl.String,
        "data_version": pl.String,
        "train_rows": pl.Int64,
        "method": pl.String,
        "trainer": pl.String,  # null on rows written before trainers were pluggable
        "base_model": pl.String,
        "created_at": pl.String,
    },
    description="Every fine-tuned checkpoint: its key, data version, train rows, method, trainer and base model.",
    partitioned=False,
    kinds=("pytorch",),
)

EVALUATION_SCORES = Table(
    "evaluation_scores",
    stage="evaluation",
    columns={
        "language": pl.String,
        "model": pl.String,
        "model_version": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
        "n_items": pl.Int64,
        "n_skipped": pl.Int64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "compared_to": pl.String,  # the model this row's delta is against (None for base)
        "delta": pl.Float64,  # value − value of compared_to
        "delta_ci_low": pl.Float64,  # paired bootstrap interval of the delta
        "delta_ci_high": pl.Float64,
        "checkpoint_key": pl.String,  # the latest checkpoint when these scores were computed
    },
    description=(
        "Base, previous and latest checkpoint on the language's test split: keyword accuracy, METEOR and chrF "
        "with bootstrap intervals and paired deltas."
    ),
)

EVALUATION_SAMPLES = Table(
    "evaluation_samples",
    stage="evaluation",
    columns={
        "id": pl.String,
        "source": pl.String,
        "image_sha256": pl.String,
        "prompt": pl.String,
        "reference": pl.String,
        "language": pl.String,
        "model": pl.String,
        "model_version": pl.String,
        "checkpoint_key": pl.String,
        "output": pl.String,
        "keyword_accuracy": pl.Float64,
        "meteor": pl.Float64,
        "chrf": pl.Float64,
    },
    description="Every test item's model output and per-item scores, per model.",
    writer="evaluation_scores",
)

EVALUATION_REPORT = Table(
    "evaluation_report",
    stage="evaluation",
    columns=EVALUATION_SCORES.columns,  # every language's scores in one table
    description="The cross-language report: base / previous / current / delta per language and metric.",
    partitioned=False,
    kinds=("png", "parquet"),
)


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        CRAWL_SOURCES,
        CRAWL_SOURCE_REJECTS,
        CC_SELECTION,
        RAW_CRAWL,
        ALT_TEXT_PAIRS,
        ALT_TEXT_REJECTS,
        IMAGES,
        IMAGE_REJECTS,
        D_KNOW,
        MLLM_CAPTIONS,
        CAPTION_REJECTS,
        TRANSLATIONS,
        TRANSLATION_REJECTS,
        D_LING,
        MELLA_DATASET,
        MELLA_DATASET_REJECTS,
        MELLA_EXPORT,
        FINETUNED_CHECKPOINT,
        EVALUATION_SCORES,
        EVALUATION_SAMPLES,
        EVALUATION_REPORT,
    )
}


def rejects_table(name: str) -> Table | None:
    """The rejects table of ``name``, if it has one."""
    return next((t for t in TABLES.values() if t.rejects_of == name), None)


def tables_written_by(writer: str) -> list[Table]:
    """The tables one asset (op) writes: its own first, then its rejects or companion tables."""
    return sorted((t for t in TABLES.values() if t.writer == writer), key=lambda t: t.name != writer)


def funnel_tables() -> list[Table]:
    """The per-language tables rows flow through from the first filter to the dataset (their rejects beside them),
    in declaration order, which is the asset graph's order."""
    return [t for t in TABLES.values() if t.partitioned and not t.is_rejects and t.stage in ("know", "ling", "dataset")]
