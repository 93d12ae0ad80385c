"""The lake resource: every asset reads and writes its tables and blobs through it."""

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr

from mella_assets.languages import Language
from mella_assets.lib.lake import LakeStore, TableNotFoundError, open_lake, shard_keys
from mella_assets.lib.model_paths import LAKE_URI_PREFIX, check_model_reference
from mella_assets.settings import Settings, load_settings
from mella_assets.tables import Table

DEFAULT_LAKE = Settings.lake


def default_lake_root() -> str:
    """``MELLA_LAKE`` (mella_assets/settings.py), read when the resource is made."""
    return load_settings().lake


class Lake(dg.ConfigurableResource):
    """Root of the data lake: Parquet tables per (asset, language) and blobs (images, models, checkpoints)."""

    root: str = Field(
        default_factory=default_lake_root,
        description="Lake folder (default .mella/lake) or s3://bucket/prefix (credentials and endpoint from AWS_*).",
    )

    _store: LakeStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> LakeStore:
        """The lake (:class:`LakeStore`: a ``LocalLake`` or an ``S3Lake``), made on first use and kept for the
        resource's life: one S3 client per resource, the settings (endpoint, cache, timeouts) loaded then."""
        if self._store is None:
            self._store = open_lake(self.root)
        return self._store

    # -- blobs (pass-throughs to the store) --------------------------------------------------------------------
    @property
    def local_root(self) -> Path:
        """A local folder for scratch work and cached copies: the lake itself, or the S3 lake's download cache."""
        return self.store.local_root

    def uri(self, key: str) -> str:
        """Where a key lives, as a URI (file:// or s3://)."""
        return self.store.uri(key)

    def location(self, key: str) -> str:
        """How another process with access to the lake opens the key: a local path, or an s3:// URI."""
        return self.store.location(key)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``, atomically; returns the key."""
        return self.store.put_bytes(key, data)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def size(self, key: str) -> int:
        return self.store.size(key)

    def fingerprint(self, key: str) -> tuple[int, str]:
        """``(size, version)`` of a blob without reading it (the S3 ETag, or mtime and inode of a local file)."""
        return self.store.fingerprint(key)

    def list(self, prefix: str, suffix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` ending with ``suffix``, sorted, temporary files skipped."""
        return self.store.list(prefix, suffix)

    def temp_path(self, key: str) -> Path:
        """A fresh temporary file beside where ``key``'s local file lives, for a writer that fills a file before
        :meth:`put_file` takes it."""
        return self.store.temp_path(key)

    def put_file(self, key: str, source: str | os.PathLike[str], *, move: bool = False) -> str:
        """Store a local file under ``key`` without reading it into memory, atomically."""
        return self.store.put_file(key, source, move=move)

    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """Copy a local folder (a model or checkpoint) into the lake under ``key``, replacing what was there."""
        return self.store.put_dir(key, source)

    def delete(self, key: str) -> int:
        """Remove the blob ``key`` or every blob under the folder ``key``; returns how many files went."""
        return self.store.delete(key)

    def has_table(self, asset: str, language: str | None = None) -> bool:
        return self.store.has_table(asset, language)

    def tables(self) -> dict[str, str]:
        """Table name → glob of its Parquet files, for every table in the lake."""
        return self.store.tables()

    # -- registered tables (mella_assets/tables.py) ------------------------------------------------------------
    def read(self, table: Table, language: Language | None = None, shard: str | None = None) -> pl.DataFrame:
        """One language of a per-language table (of a sharded table: one ``shard``, or every shard of the
        language concatenated in shard order), or a table without partitions; raises ``TableNotFoundError``
        naming the asset to materialize first."""
        partition = _partition(table, language, shard)
        if table.sharded and shard is None:
            return self.store.read_shards(table.name, partition, current_shards())
        return self.store.read_table(table.name, partition, shard)

    def read_or_empty(self, table: Table, language: Language | None = None, shard: str | None = None) -> pl.DataFrame:
        """Like :meth:`read`, but a table not written yet reads as no rows with the declared columns."""
        try:
            return self.read(table, language, shard)
        except TableNotFoundError:
            return table.empty()

    def has(self, table: Table, language: Language | None = None, shard: str | None = None) -> bool:
        """Whether the table (one language, one shard, or any shard of the language) is written."""
        partition = _partition(table, language, shard)
        if table.sharded and shard is None:
            return any(self.store.has_table(table.name, partition, s) for s in current_shards())
        return self.store.has_table(table.name, partition, shard)

    def read_all_languages(self, table: Table) -> pl.DataFrame:
        """Every language of a per-language table, concatenated (no rows, declared columns, when none exist)."""
        frame = self.store.read_table_all_languages(table.name)
        return frame if frame.width else table.empty()

    def write(
        self,
        table: Table,
        language: Language | None,
        frame: pl.DataFrame,
        shard: str | None = None,
        *,
        crawl: str | None = None,
    ) -> str:
        """Replace one language of a table (one shard of a sharded table; one crawl's language and shard of a
        ``by_crawl`` table), or the whole unpartitioned table, with ``frame``, atomically; the frame must have the
        declared columns (``Table.conform``). Returns the lake key."""
        frame = table.conform(frame)
        if table.by_crawl:
            if crawl is None or language is None or shard is None:
                raise ValueError(f"table {table.name!r} is written by crawl, language and shard")
            return self.store.write_table(table.name, language.code, frame, shard, crawl)
        if table.sharded and shard is None:
            raise ValueError(f"table {table.name!r} is sharded: write one shard")
        return self.store.write_table(table.name, _partition(table, language, shard), frame, shard)

    def write_batches(self, table: Table, language: Language, batches: Iterable[pl.DataFrame]) -> str:
        """Replace one language of a per-language table with the rows of ``batches``, written as they come (memory
        holds a batch, not the table) and put in place when complete; each batch must have the declared columns
        (``Table.conform``). An empty frame first fixes the schema, so a language without rows still gets its
        (empty) table. Returns the lake key."""
        if table.sharded or table.by_crawl or not table.partitioned:
            raise ValueError(f"table {table.name!r} is not a per-language table: use write")
        conformed = (table.conform(batch) for batch in batches)
        return self.store.write_table_batches(table.name, language.code, itertools.chain([table.empty()], conformed))

    def read_crawls(self, table: Table, crawls: Iterable[str], language: Language, shard: str) -> pl.DataFrame:
        """One language and shard of a ``by_crawl`` table over ``crawls`` (those written), in crawl order."""
        store = self.store
        keys = [store.table_key(table.name, language.code, shard, crawl) for crawl in crawls]
        frames = [store.read_table_key(key) for key in keys if store.exists(key)]
        return pl.concat(frames, how="vertical_relaxed") if frames else table.empty()

    def read_table(self, asset: str, language: str | None = None, shard: str | None = None) -> pl.DataFrame:
        return self.store.read_table(asset, language, shard)

    def read_table_or_empty(self, asset: str, language: str | None = None) -> pl.DataFrame:
        store = self.store
        return store.read_table(asset, language) if store.has_table(asset, language) else pl.DataFrame()

    def write_table(self, asset: str, language: str | None, frame: pl.DataFrame, shard: str | None = None) -> str:
        return self.store.write_table(asset, language, frame, shard)

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


def current_shards() -> list[str]:
    """The shard keys of ``MELLA_SHARDS`` (the shard partitions of the code location)."""
    return shard_keys(load_settings().shards)


def _partition(table: Table, language: Language | None, shard: str | None = None) -> str | None:
    """The lake partition of ``table`` for ``language``: its code for a per-language table, None otherwise."""
    if table.partitioned != (language is not None):
        needs = "needs a language" if table.partitioned else "has no language partitions"
        raise ValueError(f"table {table.name!r} {needs}")
    if shard is not None and not table.sharded:
        raise ValueError(f"table {table.name!r} has no shards")
    return language.code if language is not None else None
