"""The lake: Parquet tables per (asset, language) and content-addressed blobs under one root.

Layout (docs/architecture.md, "Storage layout")::

    tables/<asset>/language=<code>/data.parquet   per-language tables
    tables/<asset>/language=<code>/shard=<nn>/data.parquet   sharded (per-page) tables, one file per shard
    tables/<asset>/data.parquet                   tables without partitions
    images/<sha[:2]>/<sha>.<ext>                  validated, re-encoded images
    models/ checkpoints/<run>/ exports/ cache/    blobs
    landing/<code>/*.warc.gz                      new crawl files, watched by the landing sensor

:class:`LakeStore` is the interface; ``LakeStore(root)`` (or :func:`open_lake`) gives its implementation for the
root: :class:`LocalLake` for a folder, :class:`S3Lake` for ``s3://bucket/prefix`` (AWS, or any S3 API through
``AWS_ENDPOINT_URL``: MinIO, moto). Endpoint, region, credentials, timeouts and the download cache come from
:class:`mella_assets.settings.Settings` (loaded when the store is made, unless given).
Every write is atomic: a local file or folder is filled under a temporary name and renamed into place (one helper,
:func:`replace_atomically`); an S3 object is one PUT (or one multipart upload, which appears only when it
completes). A reader, or a rerun after a crash, sees the old object or the new one, never half of one. Large files
(WARCs of a gigabyte, model weights) go in and out through :meth:`LakeStore.put_file`, :meth:`LakeStore.put_dir`
and :meth:`LakeStore.local_path` without passing through memory.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import polars as pl

from mella_assets.settings import Settings, load_settings

if TYPE_CHECKING:
    import duckdb

# fullmatch, not match with "$": "$" also matches before a final newline.
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")
TMP_PREFIX = ".tmp-"
S3_SCHEME = "s3://"
# Large S3 transfers (put_file, local_path) go in parts, TRANSFER_CONCURRENCY at once, each part held in memory:
# ~32 MiB, where s3fs's defaults (50 MiB x 10) would hold 500 MiB. A file under two parts is one PUT.
TRANSFER_PART_BYTES = 8 * 2**20
TRANSFER_CONCURRENCY = 4


# A temporary name says which writer made it: .tmp-<host hash>-<pid>-<random>-<final name>. A killed writer leaves
# its temporary file behind (SIGKILL runs no `finally`); the next write of the same name removes it (see below).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"\.tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{32}-(.+)")
# Another host's temporary file (a shared folder) is only judged by age: older than this, its writer is gone.
STALE_TEMP_AGE_S = 6 * 3600


def shard_keys(count: int) -> list[str]:
    """The shard keys of ``count`` shards (the ``shard=`` folders, the shard partitions): zero-padded, so they sort
    as numbers (``00`` … ``15``)."""
    width = max(2, len(str(count - 1)))
    return [f"{index:0{width}d}" for index in range(count)]


def temp_name(final_name: str) -> str:
    """The temporary sibling name under which ``final_name`` is written before the rename."""
    return f"{TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}-{final_name}"


def _writer_is_gone(host: str, pid: int, path: Path) -> bool:
    if host != _HOST:
        try:
            return time.time() - path.lstat().st_mtime > STALE_TEMP_AGE_S
        except FileNotFoundError:
            return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temps(folder: Path, final_name: str) -> int:
    """Delete the temporary files (or folders) for ``final_name`` in ``folder`` that a dead writer left; returns
    how many went. A live writer's (another process writing the same name right now) are kept."""
    removed = 0
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(TMP_PREFIX)]
    except FileNotFoundError:
        return 0
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or match.group(3) != final_name:
            continue
        path = Path(entry.path)
        if _writer_is_gone(match.group(1), int(match.group(2)), path):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_atomically(target: Path, fill: Callable[[Path], object]) -> Path:
    """The one way a local file or folder is written: ``fill`` a temporary sibling of ``target``, then rename it
    into place. Readers see the old file or the whole new one; a failure leaves the old one and no temporary file.
    A folder replacing a folder: the old one is renamed aside first and removed after the new one is in place.
    Temporary files a dead writer left for ``target`` go too (:func:`remove_stale_temps`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temp_name(target.name))
    aside: Path | None = None
    try:
        fill(tmp)
        if tmp.is_dir() and (target.exists() or target.is_symlink()):
            aside = target.with_name(temp_name(target.name))
            os.replace(target, aside)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(aside, target)
                aside = None
                raise
        else:
            os.replace(tmp, target)
    finally:
        _remove(tmp)
        if aside is not None:
            _remove(aside)
    remove_stale_temps(target.parent, target.name)
    return target


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old bytes or the new ones, never a part: temp name, then rename."""
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


class _RecordingWriter(io.RawIOBase):
    """A file for polars to write into that keeps the ``OSError`` of a failed write: polars reports some of them (a
    disk that fills up while it writes the footer) only as "Invalid thrift: transport error"."""

    def __init__(self, handle: io.BufferedWriter) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise


def _write_parquet(frame: pl.DataFrame, handle: io.BufferedWriter) -> None:
    """``frame`` as zstd Parquet into ``handle``; a failed write raises its own ``OSError`` (ENOSPC, EFBIG, EIO)."""
    sink = _RecordingWriter(handle)
    try:
        frame.write_parquet(sink, compression="zstd", statistics=True)
    except pl.exceptions.PolarsError as error:
        if sink.error is not None:
            raise sink.error from error
        raise


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


class TableNotFoundError(FileNotFoundError):
    """A table (or one language of it) has not been materialized yet."""


def _check_key(key: str) -> str:
    """A lake-relative key made only of safe path parts: no absolute paths, no ``..``, no hidden names."""
    parts = key.rstrip("/").split("/")
    # File systems take names up to 255 bytes, and an atomic write adds a temporary prefix of up to 55 (temp_name).
    if not key or any(not _SAFE_PART.fullmatch(part) or part in {".", ".."} or len(part) > 180 for part in parts):
        raise ValueError(f"unsafe lake key: {key!r}")
    return "/".join(parts)


def s3_filesystem(settings: Settings | None = None):
    """An s3fs filesystem configured from ``settings`` (default: the settings loaded now): endpoint, region,
    timeouts; credentials when the settings hold them (else boto's own chain: instance role, config files)."""
    import s3fs

    settings = settings if settings is not None else load_settings()
    client_kwargs = {"region_name": settings.s3_region}
    if settings.s3_endpoint:
        client_kwargs["endpoint_url"] = settings.s3_endpoint
    # Every S3 call is bounded: connect / read timeouts and a fixed number of attempts (botocore's standard
    # retry mode, backoff with jitter), so an endpoint that goes away fails the stage instead of hanging it.
    config_kwargs = {
        "connect_timeout": settings.s3_connect_timeout_s,
        "read_timeout": settings.s3_read_timeout_s,
        "retries": {"max_attempts": settings.s3_max_attempts, "mode": "standard"},
    }
    # No instance cache: a lake object is cheap to make, and a cached filesystem would keep stale listings.
    return s3fs.S3FileSystem(
        key=settings.aws_access_key_id,
        secret=settings.aws_secret_access_key,
        token=settings.aws_session_token,
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def file_fingerprint(path: Path) -> tuple[int, str]:
    """``(size, "<mtime ns>:<inode>")`` of a local file: changes whenever the file is rewritten or replaced."""
    stat = path.stat()
    return stat.st_size, f"{stat.st_mtime_ns}:{stat.st_ino}"


def _is_s3(location: str) -> bool:
    return location.startswith(S3_SCHEME)


def _store_class(root: object) -> type[LakeStore]:
    """The implementation a root needs: the one place that tells an S3 lake from a folder."""
    return S3Lake if _is_s3(str(root)) else LocalLake


def open_lake(
    root: str | os.PathLike[str], settings: Settings | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> LakeStore:
    """The lake at ``root``: a :class:`LocalLake` for a folder, an :class:`S3Lake` for ``s3://bucket/prefix``."""
    return _store_class(root)(root, cache_dir=cache_dir, settings=settings)


def read_location(location: str, settings: Settings | None = None) -> bytes:
    """The bytes of a file named by a local path or an ``s3://bucket/key`` URI (a training job handed to a pod)."""
    if _is_s3(location):
        return s3_filesystem(settings).cat_file(location.removeprefix(S3_SCHEME))
    return Path(location).read_bytes()


class LakeStore(abc.ABC):
    """A lake rooted in a local folder or an S3 prefix: blobs under safe keys, and Parquet tables.

    The interface of :class:`LocalLake` and :class:`S3Lake`; ``LakeStore(root, cache_dir=None, settings=None)``
    makes the one the root needs (see :func:`open_lake`)."""

    root_uri: str

    def __new__(cls, *args: object, **kwargs: object) -> LakeStore:
        if cls is LakeStore:
            cls = _store_class(args[0] if args else kwargs.get("root", ""))
        return super().__new__(cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"

    # -- addresses ---------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def local_root(self) -> Path:
        """A local folder for scratch work and cached copies: the lake itself, or the S3 lake's download cache."""

    @abc.abstractmethod
    def path(self, key: str) -> Path:
        """Local path of a key in a local lake (validated: it cannot leave the root); an S3 lake raises."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where a key lives, as a URI (file:// or s3://)."""

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """How another process with access to the lake opens the key: a local path, or an s3:// URI."""

    @abc.abstractmethod
    def direct_path(self, key: str) -> Path | None:
        """The key's own file or folder when the lake is a folder this process reaches (writing there is writing
        into the lake), else None (S3: work on a local copy and upload it)."""

    @abc.abstractmethod
    def _local_file(self, key: str) -> Path:
        """Where ``key``'s local file lives: the lake's own file, or its place in the S3 lake's cache."""

    @staticmethod
    def table_key(asset: str, language: str | None = None, shard: str | None = None, crawl: str | None = None) -> str:
        folder = f"tables/{asset}" + (f"/crawl={crawl}" if crawl is not None else "")
        if language is None:
            return f"{folder}/data.parquet"
        if shard is None:
            return f"{folder}/language={language}/data.parquet"
        return f"{folder}/language={language}/shard={shard}/data.parquet"

    # -- blobs -------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``, atomically; returns the key."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The blob's bytes (FileNotFoundError when there is none)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int: ...

    @abc.abstractmethod
    def fingerprint(self, key: str) -> tuple[int, str]:
        """``(size, version)`` of a blob without reading it: the version is the S3 ETag, or the local file's
        modification time in nanoseconds and inode (every lake write replaces the file, so a new inode). A blob
        whose fingerprint is unchanged holds the same bytes."""

    @abc.abstractmethod
    def _keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted (temporary files included)."""

    def list(self, prefix: str, suffix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` ending with ``suffix``, sorted, temporary files skipped."""
        for key in self._keys(prefix):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(suffix) and not name.startswith(TMP_PREFIX):
                yield key

    @abc.abstractmethod
    def local_path(self, key: str) -> Path:
        """A local file with the blob's bytes: the file itself in a local lake, a cached download from S3
        (downloaded again whenever the object's ETag changed)."""

    @abc.abstractmethod
    def local_dir(self, key: str) -> Path:
        """A local folder holding the blob folder ``key`` (a local lake's own folder, or a cached S3 copy)."""

    def temp_path(self, key: str) -> Path:
        """A fresh temporary file name beside where ``key``'s local file lives (the lake folder, or the S3 lake's
        cache), for a writer that fills a file before :meth:`put_file` takes it; never listed as a key."""
        target = self._local_file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(temp_name(target.name))

    @abc.abstractmethod
    def put_file(self, key: str, source: str | os.PathLike[str], *, move: bool = False) -> str:
        """Store the local file ``source`` under ``key`` without reading it into memory, atomically
        (``move=True``: the file is taken, renamed where it can be instead of copied)."""

    @abc.abstractmethod
    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """Copy a local folder (a model or checkpoint) into the lake under ``key``, replacing what was there;
        file by file without reading them into memory."""

    @abc.abstractmethod
    def delete(self, key: str) -> int:
        """Remove the blob ``key`` or every blob under the folder ``key``; returns how many files went."""

    # -- tables ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _write_with(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        """Store what ``write`` writes into a binary file under ``key``, atomically (a failure keeps the old)."""

    @abc.abstractmethod
    def _read_parquet(self, key: str) -> pl.DataFrame: ...

    @abc.abstractmethod
    def table_glob(self, asset: str) -> str:
        """Glob of every Parquet file of a table (a path or an s3:// URL), as DuckDB reads it."""

    def configure_duckdb(self, connection: duckdb.DuckDBPyConnection) -> None:  # noqa: B027 (a no-op by default)
        """Let ``connection`` read this lake's files (an S3 lake adds its credentials); nothing for a folder."""

    def write_table(
        self, asset: str, language: str | None, frame: pl.DataFrame, shard: str | None = None, crawl: str | None = None
    ) -> str:
        """Atomically replace the ([crawl, ]asset, language[, shard]) table with ``frame``; returns its key."""
        key = self.table_key(asset, language, shard, crawl)
        self._write_with(key, lambda handle: _write_parquet(frame, handle))
        return key

    def write_table_batches(self, asset: str, language: str | None, batches: Iterable[pl.DataFrame]) -> str:
        """Replace the (asset, language) table with the rows of ``batches`` (frames of one schema, the first's),
        written as they come (a row group each) into a temporary file put in place when complete: memory holds a
        batch, not the table. A failure, the iterator's own included, keeps the old table. Returns its key."""
        import pyarrow.parquet as pq

        key = self.table_key(asset, language)
        tmp = self.temp_path(key)
        writer = None
        try:
            for batch in batches:
                table = batch.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), table.schema, compression="zstd", write_statistics=True)
                if table.num_rows:
                    writer.write_table(table.cast(writer.schema), row_group_size=table.num_rows)
            if writer is None:
                raise ValueError(f"no batch to write to {key!r}: give at least one (an empty frame writes no rows)")
            writer.close()
            writer = None
            self.put_file(key, tmp, move=True)
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
        return key

    def read_table_key(self, key: str) -> pl.DataFrame:
        """The table file at ``key`` (one of :meth:`table_key`'s)."""
        return self._read_parquet(_check_key(key))

    def shard_table_keys(self, asset: str, language: str) -> list[str]:
        """The shard files of one language of a sharded table, in shard order (none for a per-language table)."""
        return [key for key in self.list(f"tables/{asset}/language={language}", "data.parquet") if "/shard=" in key]

    def has_table(self, asset: str, language: str | None = None, shard: str | None = None) -> bool:
        """Whether the table (its language, one shard of it, or — no shard given — any shard) is written."""
        if self.exists(self.table_key(asset, language, shard)):
            return True
        return language is not None and shard is None and bool(self.shard_table_keys(asset, language))

    def read_table(self, asset: str, language: str | None = None, shard: str | None = None) -> pl.DataFrame:
        """The (asset, language[, shard]) table; for a sharded table without a shard, every shard file of the
        language, concatenated in shard order. :class:`TableNotFoundError` names what to materialize first."""
        key = self.table_key(asset, language, shard)
        if self.exists(key):
            return self._read_parquet(key)
        if language is not None and shard is None and (keys := self.shard_table_keys(asset, language)):
            return _concat([self._read_parquet(key) for key in keys])
        where = f" for language {language!r}" if language else ""
        where += f" shard {shard!r}" if shard is not None else ""
        raise TableNotFoundError(f"table {asset!r}{where} does not exist yet: materialize {asset} first")

    def read_shards(self, asset: str, language: str, shards: list[str]) -> pl.DataFrame:
        """A sharded table's whole language: its ``shards`` that exist, concatenated in shard order (files of
        shards outside ``shards``, left by another shard count, are not read). A lake written before the table
        was sharded (one file per language) reads as it was. :class:`TableNotFoundError` when there is neither."""
        keys = [key for key in (self.table_key(asset, language, shard) for shard in shards) if self.exists(key)]
        if not keys and self.exists(self.table_key(asset, language)):
            keys = [self.table_key(asset, language)]
        if not keys:
            raise TableNotFoundError(
                f"table {asset!r} for language {language!r} has no shard yet: materialize {asset} first"
            )
        return _concat([self._read_parquet(key) for key in keys])

    def table_keys(self, asset: str) -> list[str]:
        """Keys of every language partition of a table."""
        return [key for key in self.list(f"tables/{asset}", "data.parquet") if "/language=" in key]

    def read_table_all_languages(self, asset: str) -> pl.DataFrame:
        """Every language partition of a table, concatenated (empty frame if none exist)."""
        frames = [self._read_parquet(key) for key in self.table_keys(asset)]
        frames = [f for f in frames if f.height]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def tables(self) -> dict[str, str]:
        """Table name → glob of its Parquet files (a path or an s3:// URL), for every table in the lake."""
        names = sorted({key.split("/")[1] for key in self.list("tables", "data.parquet")})
        return {name: self.table_glob(name) for name in names}


class LocalLake(LakeStore):
    """A lake in a local (or mounted, shared) folder."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root_uri = str(self.root)

    @property
    def local_root(self) -> Path:
        return self.root

    def path(self, key: str) -> Path:
        """Local path of a key (validated, so it cannot leave the root, by name or by a symlink inside the lake
        that points out)."""
        path = self.root / _check_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"unsafe lake key: {key!r} leads out of the lake through a symbolic link")
        return path

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def location(self, key: str) -> str:
        return str(self.path(key))

    def direct_path(self, key: str) -> Path | None:
        return self.path(key)

    def _local_file(self, key: str) -> Path:
        return self.path(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        atomic_write_bytes(self.path(key), data)
        return key

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def fingerprint(self, key: str) -> tuple[int, str]:
        return file_fingerprint(self.path(key))

    def _keys(self, prefix: str) -> list[str]:
        base_path = self.path(prefix)
        if not base_path.exists():
            return []
        # os.walk does not descend into linked folders; linked files are skipped too (the lake writes none).
        return sorted(
            (Path(folder) / name).relative_to(self.root).as_posix()
            for folder, _dirs, names in os.walk(base_path)
            for name in names
            if not os.path.islink(os.path.join(folder, name)) and os.path.isfile(os.path.join(folder, name))
        )

    def local_path(self, key: str) -> Path:
        return self.path(key)

    def local_dir(self, key: str) -> Path:
        folder = self.path(key)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder")
        return folder

    def put_file(self, key: str, source: str | os.PathLike[str], *, move: bool = False) -> str:
        """Copied to a temporary sibling and renamed into place (``move=True``: renamed directly when on the same
        file system)."""
        source = Path(source)
        target = self.path(key)
        if move:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
                remove_stale_temps(target.parent, target.name)
                return key
            except OSError:
                pass  # another file system: copy below
        replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
        if move:
            source.unlink(missing_ok=True)
        return key

    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """A copy in a temporary folder beside the target, renamed into place."""
        replace_atomically(self.path(key), lambda tmp: shutil.copytree(source, tmp))
        return key

    def delete(self, key: str) -> int:
        target = self.path(key)
        if target.is_file():
            target.unlink()
            return 1
        count = sum(1 for p in target.rglob("*") if p.is_file()) if target.exists() else 0
        shutil.rmtree(target, ignore_errors=True)
        return count

    def _write_with(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                write(handle)

        replace_atomically(self.path(key), fill)

    def _read_parquet(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(self.path(key))

    def table_glob(self, asset: str) -> str:
        return str(self.root / "tables" / asset / "**" / "data.parquet")


class S3Lake(LakeStore):
    """A lake under an S3 prefix (s3fs underneath); blobs a library needs as files are cached in ``cache_dir``
    (default: the setting ``MELLA_LAKE_CACHE``) and downloaded again when their ETag changes."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.root_uri = str(root).rstrip("/")
        self._bucket_prefix = self.root_uri.removeprefix(S3_SCHEME)
        self._fs = s3_filesystem(self.settings)
        self.cache_dir = Path(cache_dir or self.settings.lake_cache) / self._bucket_prefix

    @property
    def local_root(self) -> Path:
        return self.cache_dir

    def path(self, key: str) -> Path:
        raise ValueError(f"{self} is on S3: use local_path() / local_dir() for a local copy of {key!r}")

    def _object(self, key: str) -> str:
        return f"{self._bucket_prefix}/{_check_key(key)}"

    def uri(self, key: str) -> str:
        return f"{S3_SCHEME}{self._object(key)}"

    def location(self, key: str) -> str:
        return self.uri(key)

    def direct_path(self, key: str) -> Path | None:
        _check_key(key)
        return None

    def _local_file(self, key: str) -> Path:
        return self.cache_dir / _check_key(key)

    def _etag_file(self, key: str) -> Path:
        # Beside the cache, not inside it: a model folder must hold only the model.
        return self.cache_dir.parent / f"{self.cache_dir.name}.etags" / key

    def _etag(self, key: str) -> str:
        return str(self._fs.info(self._object(key)).get("ETag", ""))

    def put_bytes(self, key: str, data: bytes) -> str:
        self._fs.pipe_file(self._object(key), data)
        return key

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._fs.cat_file(self._object(key))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from error

    def exists(self, key: str) -> bool:
        return self._fs.exists(self._object(key))

    def size(self, key: str) -> int:
        return int(self._fs.size(self._object(key)))

    def fingerprint(self, key: str) -> tuple[int, str]:
        info = self._fs.info(self._object(key))
        return int(info["size"]), str(info.get("ETag", ""))

    def _keys(self, prefix: str) -> list[str]:
        base = self._object(prefix)
        if not self._fs.exists(base):
            return []
        return [name.removeprefix(self._bucket_prefix + "/") for name in sorted(self._fs.find(base))]

    def local_path(self, key: str) -> Path:
        key = _check_key(key)
        target = self._local_file(key)
        etag_file = self._etag_file(key)
        etag = self._etag(key)
        if not target.exists() or not etag_file.exists() or etag_file.read_text() != etag:
            # Streamed to a temporary sibling, then renamed: a gigabyte WARC never sits in memory.
            replace_atomically(
                target,
                lambda tmp: self._fs.get_file(
                    self._object(key), str(tmp), chunksize=TRANSFER_PART_BYTES, max_concurrency=TRANSFER_CONCURRENCY
                ),
            )
            atomic_write_bytes(etag_file, etag.encode())
        return target

    def local_dir(self, key: str) -> Path:
        keys = list(self.list(key))
        if not keys:
            raise FileNotFoundError(f"{self.uri(key)} holds no files")
        for blob in keys:
            self.local_path(blob)
        folder = self._local_file(key)
        # A file the lake no longer holds (put_dir replaced the folder) must not linger in the copy; another
        # process's download in progress (a temporary name) is left alone.
        wanted = {self._local_file(blob) for blob in keys}
        for stale in folder.rglob("*"):
            if stale.is_file() and stale not in wanted and not stale.name.startswith(TMP_PREFIX):
                stale.unlink(missing_ok=True)
        return folder

    def put_file(self, key: str, source: str | os.PathLike[str], *, move: bool = False) -> str:
        """A multipart upload (one PUT when small); with ``move=True`` the file then becomes the local cache copy,
        so :meth:`local_path` finds it without downloading it again."""
        source = Path(source)
        key = _check_key(key)
        self._fs.put_file(
            str(source), self._object(key), chunksize=TRANSFER_PART_BYTES, max_concurrency=TRANSFER_CONCURRENCY
        )
        if move:
            replace_atomically(self._local_file(key), lambda tmp: shutil.move(source, tmp))
            atomic_write_bytes(self._etag_file(key), self._etag(key).encode())
        return key

    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """Every file is uploaded first (streamed, each object replaced in one PUT or multipart upload), then the
        keys under ``key`` that the folder no longer has are deleted: until then readers see the old folder."""
        key, source = _check_key(key), Path(source)
        uploaded = set()
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            uploaded.add(self.put_file(f"{key}/{file.relative_to(source).as_posix()}", file))
        for old in self._keys(key):
            if old not in uploaded:
                self._fs.rm_file(self._object(old))
        return key

    def delete(self, key: str) -> int:
        keys = [key] if self._fs.isfile(self._object(key)) else list(self.list(key))
        for old in keys:
            self._fs.rm_file(self._object(old))
        return len(keys)

    def _write_with(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        buffer = io.BytesIO()
        write(buffer)
        self.put_bytes(key, buffer.getvalue())

    def _read_parquet(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.get_bytes(key)))

    def table_glob(self, asset: str) -> str:
        return f"{S3_SCHEME}{self._bucket_prefix}/tables/{asset}/**/data.parquet"

    def configure_duckdb(self, connection: duckdb.DuckDBPyConnection) -> None:
        from mella_assets.lib.duckdb_s3 import enable_s3

        enable_s3(connection, self.settings)
