"""Dataset group: the merged SFT records per language (with blocking checks) and the exports."""

from collections.abc import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.dataset import build as ds
from mella_assets.dataset.export import ExportOptions, write_export
from mella_assets.languages import LANGUAGES
from mella_assets.lib.catalog import records_per_page, run_sql, yield_funnel
from mella_assets.lib.watchdog import watched_stage
from mella_assets.metadata import StageTimer, counts_by, preview_table, table_metadata
from mella_assets.partitions import LANGUAGE_PARTITIONS
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Translator
from mella_assets.specs import DATASET_SPLITS_POOL, language_of, stage_specs, table_result
from mella_assets.tables import D_KNOW, D_LING, MELLA_DATASET, MELLA_DATASET_REJECTS, MELLA_EXPORT

# Blocking: share of answers language ID must confirm as the partition's language (per source kind).
MIN_LANGUAGE_PURITY = 0.9
# Warnings (non-blocking): most tolerated share of repeated answers / answers outside the length bounds.
MAX_DUPLICATE_ANSWER_RATE = 0.2
MAX_OUT_OF_BOUNDS_SHARE = 0.05


class DatasetConfig(dg.Config):
    """How records are mixed and split; the defaults run the demo."""

    test_groups_per_source: int = Field(4, description="Image clusters per source kind in each language's test set.")
    max_test_share: float = Field(0.3, description="At most this share of a source's clusters go to test.")
    near_duplicate_max_distance: int = Field(8, description="dHash bits within which two images are one cluster.")
    max_per_source: dict[str, int] = Field(default_factory=dict, description='Record caps, e.g. {"ling": 1000}.')
    ling_per_know: float | None = Field(None, description="At most this many ling records per know record.")
    max_per_domain: int | None = Field(None, description="At most this many records from one web domain.")


@dg.multi_asset(
    name="mella_dataset", specs=stage_specs("mella_dataset", deps=[D_KNOW, D_LING]), pool=DATASET_SPLITS_POOL
)
@watched_stage
def mella_dataset(
    context: dg.AssetExecutionContext, lake: Lake, config: DatasetConfig
) -> tuple[dg.MaterializeResult, ...]:
    """SFT records: a native prompt from the prompt bank and the answer (alt text for `know`, translated
    caption for `ling`) with page, domain and image provenance; mix caps; a train / test split by near-duplicate
    image cluster that keeps every earlier test image in test. Capped or unusable candidates go to
    ``mella_dataset_rejects`` with a reason."""
    timer = StageTimer()
    language = language_of(context)
    know = lake.read(D_KNOW, language)
    ling = lake.read(D_LING, language)
    previous = lake.read_or_empty(MELLA_DATASET, language)
    # Images this language shares with the other languages' written splits (DuckDB over their partitions).
    images = pl.concat(
        [f.select("image_sha256", "phash") for f in (know, ling) if {"image_sha256", "phash"} <= set(f.columns)]
        or [pl.DataFrame(schema={"image_sha256": pl.String, "phash": pl.String})],
        how="vertical_relaxed",
    )
    others = ds.other_language_links(lake.store, language.code, images, config.near_duplicate_max_distance)
    build = ds.build_sft_records(
        know,
        ling,
        language,
        split=ds.SplitPolicy(config.test_groups_per_source, config.max_test_share, config.near_duplicate_max_distance),
        mix=ds.MixPolicy(config.max_per_source, config.ling_per_know, config.max_per_domain),
        previous=previous if previous.height else None,
        others=others,
    )
    lake.write(MELLA_DATASET, language, build.records)
    lake.write(MELLA_DATASET_REJECTS, language, build.rejects)
    frame = build.records
    yields = yield_funnel(lake.store, language.code)  # read after the write: the last step is these records
    return table_result(
        MELLA_DATASET,
        frame,
        table_metadata(
            timer=timer,
            rows_in=know.height + ling.height,
            output=frame.drop("conversation"),
            rejects=build.rejects,
            extra={
                "by_source": dg.MetadataValue.json(counts_by(frame, "source")),
                "by_split": dg.MetadataValue.json(counts_by(frame, "split")),
                "train_rows": int((frame["split"] == "train").sum()),
                "test_rows": int((frame["split"] == "test").sum()),
                "split_stats": dg.MetadataValue.json(build.stats),
                "yield": preview_table(yields, rows=yields.height),
                "records_per_page": records_per_page(yields),
            },
        ),
    ), table_result(MELLA_DATASET_REJECTS, build.rejects)


# The seven checks of a partition are one step (one multi_asset_check) that reads the records once; each keeps its
# own name, blocking flag and result. Partitioned like the asset: a run evaluates them for its language, and the UI
# shows each language's result (an unpartitioned check on a partitioned asset shows one result with no partition).
def _partition(context: dg.AssetCheckExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


def _records(context: dg.AssetCheckExecutionContext, lake: Lake) -> pl.DataFrame:
    """The records the checks judge: the run's language, or every language for a run without a partition."""
    if not context.has_partition_key:
        return lake.read_all_languages(MELLA_DATASET)
    return lake.read_or_empty(MELLA_DATASET, language_of(context))


def _schema(frame: pl.DataFrame, partition: str | None) -> dg.AssetCheckResult:
    problems = ds.schema_problems(frame, partition)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


def _not_empty(frame: pl.DataFrame) -> dg.AssetCheckResult:
    splits = counts_by(frame, "split")
    passed = splits.get("train", 0) > 0 and splits.get("test", 0) > 0
    return dg.AssetCheckResult(passed=passed, metadata={"by_split": dg.MetadataValue.json(splits)})


def _split_leakage(frame: pl.DataFrame, lake: Lake, partition: str | None) -> dg.AssetCheckResult:
    leaked = ds.split_leakage(frame) if "split" in frame.columns and "image_sha256" in frame.columns else -1
    across = ds.cross_language_leaks(lake.store, partition)
    return dg.AssetCheckResult(
        passed=leaked == 0 and across.is_empty(),
        metadata={
            "leaked_image_clusters": leaked,
            "cross_language_leaks": across.height,
            "cross_language_examples": dg.MetadataValue.json(across.head(5).to_dicts()),
        },
    )


def _language_purity(
    frame: pl.DataFrame, partition: str | None, langid: LanguageIdentification, translator: Translator
) -> dg.AssetCheckResult:
    language = LANGUAGES[partition] if partition else None
    if language is None or "text" not in frame.columns:
        return dg.AssetCheckResult(passed=False, metadata={"error": "needs a language partition with a text column"})
    purity = ds.language_purity(frame, language, langid.identifier([language]))
    # Tiny demo models cannot write the language: where translation QA only records the language, so does this.
    enforced = ["know", "ling"] if translator.enforce_output_language else ["know"]
    failing = [s for s in enforced if purity[s].share < MIN_LANGUAGE_PURITY]
    return dg.AssetCheckResult(
        passed=not failing,
        metadata={
            **{f"purity_{p.source}": p.share for p in purity.values()},
            "wrong_labels": dg.MetadataValue.json({p.source: p.wrong_labels for p in purity.values()}),
            "enforced_sources": dg.MetadataValue.json(enforced),
            "threshold": MIN_LANGUAGE_PURITY,
        },
    )


def _images_present(frame: pl.DataFrame, lake: Lake) -> dg.AssetCheckResult:
    keys = frame["image_key"].drop_nulls().unique().to_list() if "image_key" in frame.columns else []
    missing = sorted(key for key in keys if not lake.exists(key))
    nulls = frame["image_key"].null_count() if "image_key" in frame.columns else frame.height
    return dg.AssetCheckResult(
        passed=not missing and nulls == 0,
        metadata={"images": len(keys), "missing": len(missing) + nulls, "examples": dg.MetadataValue.json(missing[:5])},
    )


def _duplicate_answers(frame: pl.DataFrame) -> dg.AssetCheckResult:
    rate = ds.duplicate_answer_rate(frame)
    return dg.AssetCheckResult(
        passed=rate <= MAX_DUPLICATE_ANSWER_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicate_answer_rate": rate, "threshold": MAX_DUPLICATE_ANSWER_RATE},
    )


def _answer_length(frame: pl.DataFrame) -> dg.AssetCheckResult:
    outside = ds.answers_out_of_bounds(frame)
    share = round(outside / frame.height, 4) if frame.height else 0.0
    return dg.AssetCheckResult(
        passed=share <= MAX_OUT_OF_BOUNDS_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "out_of_bounds": outside,
            "share": share,
            "bounds_chars": dg.MetadataValue.json(ds.ANSWER_LENGTH_BOUNDS),
        },
    )


# name → (blocking, description): the checks' identities, as the UI and the tests know them.
DATASET_CHECKS = {
    "mella_dataset_schema": (True, "Columns, types, required values and ids match the contract."),
    "mella_dataset_not_empty": (True, "The language has train and test records."),
    "mella_dataset_split_leakage": (
        True,
        "No image, nor a near-duplicate of it (dHash clusters recomputed here), is in both splits; nor is a test "
        "image of this language in another language's train split, or the reverse (all partitions, DuckDB).",
    ),
    "mella_dataset_language_purity": (
        True,
        f"At least {MIN_LANGUAGE_PURITY:.0%} of answers are in the partition's language (language ID); "
        "for ling only while translation language QA is enforced.",
    ),
    "mella_dataset_images_present": (True, "Every record's image file is in the lake."),
    "mella_dataset_duplicate_answers": (
        False,
        f"At most {MAX_DUPLICATE_ANSWER_RATE:.0%} of answers repeat another answer of the same source.",
    ),
    "mella_dataset_answer_length": (
        False,
        f"At most {MAX_OUT_OF_BOUNDS_SHARE:.0%} of answers fall outside the length bounds of their source.",
    ),
}


@dg.multi_asset_check(
    name="mella_dataset_checks",
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=MELLA_DATASET.name,
            blocking=blocking,
            description=description,
            partitions_def=LANGUAGE_PARTITIONS,
        )
        for name, (blocking, description) in DATASET_CHECKS.items()
    ],
)
def mella_dataset_checks(
    context: dg.AssetCheckExecutionContext, lake: Lake, langid: LanguageIdentification, translator: Translator
) -> Iterator[dg.AssetCheckResult]:
    """Every check of a mella_dataset partition over one read of its records."""
    frame, partition = _records(context, lake), _partition(context)
    results = {
        "mella_dataset_schema": _schema(frame, partition),
        "mella_dataset_not_empty": _not_empty(frame),
        "mella_dataset_split_leakage": _split_leakage(frame, lake, partition),
        "mella_dataset_language_purity": _language_purity(frame, partition, langid, translator),
        "mella_dataset_images_present": _images_present(frame, lake),
        "mella_dataset_duplicate_answers": _duplicate_answers(frame),
        "mella_dataset_answer_length": _answer_length(frame),
    }
    for name, check in results.items():
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=MELLA_DATASET.name,
            passed=check.passed,
            severity=check.severity,
            metadata=check.metadata,
        )


class ExportConfig(dg.Config):
    """What `mella_export` writes besides the JSON, Parquet and card."""

    copy_images: bool = Field(True, description="Copy images into the export (self-contained) or reference the lake.")
    embed_images_in_parquet: bool = Field(False, description="Also store image bytes in the Parquet file.")
    shard_max_bytes: int = Field(256 * 1024 * 1024, description="Size cap of one WebDataset tar shard.")
    hf_embed_images: bool = Field(
        True, description="Embed image bytes in the 🤗 Parquet parts (data/); off: paths only."
    )
    license: str = Field(
        "other", description="The card's licence id (e.g. cc-by-4.0); 'other': rights stay with each source."
    )


@dg.multi_asset(name="mella_export", specs=stage_specs("mella_export", deps=[MELLA_DATASET]))
def mella_export(lake: Lake, config: ExportConfig) -> dg.MaterializeResult:
    """Every language's records exported for other trainers under ``exports/<version>/``: ShareGPT JSON with a
    LLaMA-Factory ``dataset_info.json``, ms-swift messages JSONL, Parquet, 🤗 datasets Parquet parts (``data/``,
    loadable with ``load_dataset``), WebDataset tar shards, a dataset card
    with the run's statistics, and ``MANIFEST.json`` + ``SHA256SUMS`` over every file."""
    timer = StageTimer()
    store = lake.store
    records = lake.read_all_languages(MELLA_DATASET)
    version = ds.dataset_version(records)
    funnel = run_sql(store, "SELECT * FROM funnel_by_language") if records.height else pl.DataFrame()
    rejects = run_sql(store, "SELECT * FROM rejects_by_reason") if records.height else pl.DataFrame()
    yields = yield_funnel(store) if records.height else None
    options = ExportOptions(
        config.copy_images,
        config.embed_images_in_parquet,
        config.shard_max_bytes,
        hf_embed_images=config.hf_embed_images,
        license=config.license,
    )
    manifest = write_export(
        store, f"exports/{version}", records, version, options, funnel=funnel, rejects=rejects, yield_funnel=yields
    )
    lake.put_bytes("exports/LATEST", version.encode())
    files = manifest.with_columns(pl.lit(version).alias("version"))
    lake.write(MELLA_EXPORT, None, files)
    return table_result(
        MELLA_EXPORT,
        files,
        table_metadata(
            timer=timer,
            rows_in=records.height,
            output=files.filter(pl.col("kind") != "image"),
            derived=True,
            extra={
                "version": version,
                "export_uri": lake.uri(f"exports/{version}"),
                "by_language": dg.MetadataValue.json(counts_by(records, "language")),
                "files_by_kind": dg.MetadataValue.json(counts_by(files, "kind")),
                "bytes_written": int(files["bytes"].sum() or 0),
            },
        ),
    )
