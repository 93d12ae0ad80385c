"""The lake: Parquet tables per (asset, language) and content-addressed blobs under one root.

Layout (DESIGN §6)::

    tables/<asset>/language=<code>/data.parquet   per-language tables
    tables/<asset>/data.parquet                   tables without partitions
    images/<sha[:2]>/<sha>.<ext>                  validated, re-encoded images
    models/ checkpoints/<run>/ exports/ cache/    blobs
    landing/<code>/*.warc.gz                      new crawl files, watched by the landing sensor

Every write goes to a temporary name in the destination folder and is renamed into place, so a reader (or a
rerun after a crash) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old bytes or the new ones, never a part: temp name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class TableNotFoundError(FileNotFoundError):
    """A table (or one language of it) has not been materialized yet."""


def _check_key(key: str) -> str:
    """A lake-relative key made only of safe path parts: no absolute paths, no ``..``, no hidden names."""
    parts = key.rstrip("/").split("/")
    if not key or any(not _SAFE_PART.match(part) or part in {".", ".."} for part in parts):
        raise ValueError(f"unsafe lake key: {key!r}")
    return "/".join(parts)


class LakeStore:
    """A lake rooted in a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- paths -------------------------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        """Local path of a lake key (the key is validated, so it cannot leave the root)."""
        return self.root / _check_key(key)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    @staticmethod
    def table_key(asset: str, language: str | None = None) -> str:
        if language is None:
            return f"tables/{asset}/data.parquet"
        return f"tables/{asset}/language={language}/data.parquet"

    # -- tables ------------------------------------------------------------------------------------------------
    def write_table(self, asset: str, language: str | None, frame: pl.DataFrame) -> str:
        """Atomically replace the (asset, language) table with ``frame``; returns its key."""
        key = self.table_key(asset, language)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}.parquet")
        try:
            frame.write_parquet(tmp, compression="zstd", statistics=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def has_table(self, asset: str, language: str | None = None) -> bool:
        return self.path(self.table_key(asset, language)).exists()

    def read_table(self, asset: str, language: str | None = None) -> pl.DataFrame:
        """The (asset, language) table; :class:`TableNotFoundError` names what to materialize first."""
        path = self.path(self.table_key(asset, language))
        if not path.exists():
            where = f" for language {language!r}" if language else ""
            raise TableNotFoundError(f"table {asset!r}{where} does not exist yet: materialize {asset} first")
        return pl.read_parquet(path)

    def read_table_all_languages(self, asset: str) -> pl.DataFrame:
        """Every language partition of a table, concatenated (empty frame if none exist)."""
        frames = [pl.read_parquet(p) for p in sorted(self.root.glob(f"tables/{asset}/language=*/data.parquet"))]
        frames = [f for f in frames if f.height]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def tables(self) -> dict[str, str]:
        """Table name → glob of its Parquet files, for every table in the lake."""
        found: dict[str, str] = {}
        for folder in sorted((self.root / "tables").glob("*")):
            if folder.is_dir() and any(folder.rglob("data.parquet")):
                found[folder.name] = str(folder / "**" / "data.parquet")
        return found

    # -- blobs -------------------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        atomic_write_bytes(self.path(key), data)
        return key

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """Copy a local folder (a model or checkpoint) into the lake under ``key``, replacing what was there."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
        shutil.copytree(source, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return key

    def local_dir(self, key: str) -> Path:
        """A local folder holding the blob folder ``key`` (for a local lake: the folder itself)."""
        return self.path(key)

    def list(self, prefix: str, suffix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` ending with ``suffix``, sorted, temporary files skipped."""
        base = self.path(prefix)
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.name.endswith(suffix) and not path.name.startswith(TMP_PREFIX):
                yield path.relative_to(self.root).as_posix()
