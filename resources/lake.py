"""The lake resource: every asset reads and writes its tables and blobs through it."""

import os
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from mella_assets.languages import Language
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.model_paths import check_model_reference
from mella_assets.tables import Table

DEFAULT_LAKE = ".mella/lake"
LAKE_URI_PREFIX = "lake://"


def default_lake_root() -> str:
    return os.environ.get("MELLA_LAKE", DEFAULT_LAKE)


class Lake(dg.ConfigurableResource):
    """Root of the data lake: Parquet tables per (asset, language) and blobs (images, models, checkpoints)."""

    root: str = Field(
        default_factory=default_lake_root,
        description="Lake folder (default .mella/lake) or s3://bucket/prefix (credentials and endpoint from AWS_*).",
    )

    @property
    def store(self) -> LakeStore:
        return LakeStore(self.root)

    # -- registered tables (mella_assets/tables.py) ------------------------------------------------------------
    def read(self, table: Table, language: Language | None = None) -> pl.DataFrame:
        """One language of a per-language table, or a table without partitions; raises
        ``TableNotFoundError`` naming the asset to materialize first."""
        return self.store.read_table(table.name, _partition(table, language))

    def read_or_empty(self, table: Table, language: Language | None = None) -> pl.DataFrame:
        """Like :meth:`read`, but a table not written yet reads as no rows with the declared columns."""
        store, partition = self.store, _partition(table, language)
        return store.read_table(table.name, partition) if store.has_table(table.name, partition) else table.empty()

    def read_all_languages(self, table: Table) -> pl.DataFrame:
        """Every language of a per-language table, concatenated (no rows, declared columns, when none exist)."""
        frame = self.store.read_table_all_languages(table.name)
        return frame if frame.width else table.empty()

    def write(self, table: Table, language: Language | None, frame: pl.DataFrame) -> str:
        """Replace one language of a table (or the whole unpartitioned table) with ``frame``, atomically; the frame
        must have the declared columns (``Table.conform``). Returns the lake key."""
        return self.store.write_table(table.name, _partition(table, language), table.conform(frame))

    def read_table(self, asset: str, language: str | None = None) -> pl.DataFrame:
        return self.store.read_table(asset, language)

    def read_table_or_empty(self, asset: str, language: str | None = None) -> pl.DataFrame:
        store = self.store
        return store.read_table(asset, language) if store.has_table(asset, language) else pl.DataFrame()

    def write_table(self, asset: str, language: str | None, frame: pl.DataFrame) -> str:
        return self.store.write_table(asset, language, frame)

    def path(self, key: str) -> Path:
        return self.store.path(key)

    def local_path(self, key: str) -> Path:
        """A local file with the blob's bytes (the file itself, or a cached copy from S3)."""
        return self.store.local_path(key)

    def local_dir(self, key: str) -> Path:
        """A local folder with the blob folder's files (the folder itself, or a cached copy from S3)."""
        return self.store.local_dir(key)

    def resolve_model(self, model: str) -> str:
        """A model reference as `from_pretrained` takes it: ``lake://models/x`` → the local folder."""
        if model.startswith(LAKE_URI_PREFIX):
            key = model.removeprefix(LAKE_URI_PREFIX)
            try:
                return str(self.store.local_dir(key))
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"model {model} is not in the lake ({self.store.uri(key)}); `mella demo` builds the tiny models"
                ) from error
        # A missing folder would otherwise reach from_pretrained as a "hub id" and fail with a network message.
        return check_model_reference(model)


def _partition(table: Table, language: Language | None) -> str | None:
    """The lake partition of ``table`` for ``language``: its code for a per-language table, None otherwise."""
    if table.partitioned != (language is not None):
        needs = "needs a language" if table.partitioned else "has no language partitions"
        raise ValueError(f"table {table.name!r} {needs}")
    return language.code if language is not None else None
