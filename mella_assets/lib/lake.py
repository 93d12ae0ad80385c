"""The lake: Parquet tables per (asset, language) and content-addressed blobs under one root.

Layout (DESIGN §6)::

    tables/<asset>/language=<code>/data.parquet   per-language tables
    tables/<asset>/data.parquet                   tables without partitions
    images/<sha[:2]>/<sha>.<ext>                  validated, re-encoded images
    models/ checkpoints/<run>/ exports/ cache/    blobs
    landing/<code>/*.warc.gz                      new crawl files, watched by the landing sensor

The root is a local folder or ``s3://bucket/prefix`` (AWS, or any S3 API through ``AWS_ENDPOINT_URL``: MinIO,
moto). Credentials come only from the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``).
Every write is atomic: a local file is written under a temporary name and renamed into place; an S3 object is
one PUT (or one multipart upload, which appears only when it completes). A reader, or a rerun after a crash, sees
the old object or the new one, never half of one. Large files (WARCs of a gigabyte) go in and out through
:meth:`LakeStore.put_file` and :meth:`LakeStore.local_path` without passing through memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

# fullmatch, not match with "$": "$" also matches before a final newline.
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")
TMP_PREFIX = ".tmp-"
S3_SCHEME = "s3://"
# Where blobs of an S3 lake are copied when a library needs a local file (WARC readers, from_pretrained).
DEFAULT_CACHE = Path(os.environ.get("MELLA_LAKE_CACHE", Path.home() / ".cache" / "mella" / "lake"))
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old bytes or the new ones, never a part: temp name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    remove_stale_temps(path.parent, path.name)


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


class TableNotFoundError(FileNotFoundError):
    """A table (or one language of it) has not been materialized yet."""


def _check_key(key: str) -> str:
    """A lake-relative key made only of safe path parts: no absolute paths, no ``..``, no hidden names."""
    parts = key.rstrip("/").split("/")
    # File systems take names up to 255 bytes, and an atomic write adds a temporary prefix of up to 55 (temp_name).
    if not key or any(not _SAFE_PART.fullmatch(part) or part in {".", ".."} or len(part) > 180 for part in parts):
        raise ValueError(f"unsafe lake key: {key!r}")
    return "/".join(parts)


def s3_filesystem():
    """An s3fs filesystem configured from the environment only (endpoint, keys, region)."""
    import s3fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    client_kwargs = {"region_name": os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    # Every S3 call is bounded: connect / read timeouts and a fixed number of attempts (botocore's standard
    # retry mode, backoff with jitter), so an endpoint that goes away fails the stage instead of hanging it.
    config_kwargs = {
        "connect_timeout": float(os.environ.get("MELLA_S3_CONNECT_TIMEOUT_S", "10")),
        "read_timeout": float(os.environ.get("MELLA_S3_READ_TIMEOUT_S", "60")),
        "retries": {"max_attempts": int(os.environ.get("MELLA_S3_MAX_ATTEMPTS", "5")), "mode": "standard"},
    }
    # No instance cache: a lake object is cheap to make, and a cached filesystem would keep stale listings.
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs,
        config_kwargs=config_kwargs,
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def _replace_via_temp(target: Path, fill: Callable[[Path], object]) -> None:
    """``fill`` a temporary sibling of ``target``, then rename it into place: readers see the old file or the
    whole new one, and a failure leaves no temporary file."""
    tmp = target.with_name(temp_name(target.name))
    try:
        fill(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def file_fingerprint(path: Path) -> tuple[int, str]:
    """``(size, "<mtime ns>:<inode>")`` of a local file: changes whenever the file is rewritten or replaced."""
    stat = path.stat()
    return stat.st_size, f"{stat.st_mtime_ns}:{stat.st_ino}"


class LakeStore:
    """A lake rooted in a local folder or an S3 prefix; the same methods serve both."""

    def __init__(self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        text = str(root)
        self.is_s3 = text.startswith(S3_SCHEME)
        if self.is_s3:
            self.root_uri = text.rstrip("/")
            self.root = None
            self._fs = s3_filesystem()
            self._bucket_prefix = self.root_uri.removeprefix(S3_SCHEME)
            self.cache_dir = Path(cache_dir or DEFAULT_CACHE) / self._bucket_prefix
        else:
            self.root = Path(text).expanduser().resolve()
            self.root_uri = str(self.root)
            self._fs = None

    @property
    def local_root(self) -> Path:
        """A local folder for scratch work and cached copies: the lake itself, or the S3 lake's download cache."""
        return self.cache_dir if self.is_s3 else self.root

    def __repr__(self) -> str:
        return f"LakeStore({self.root_uri!r})"

    # -- addresses ---------------------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        """Local path of a key in a local lake (validated, so it cannot leave the root, by name or by a symlink
        inside the lake that points out)."""
        if self.is_s3:
            raise ValueError(f"{self} is on S3: use local_path() / local_dir() for a local copy of {key!r}")
        path = self.root / _check_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"unsafe lake key: {key!r} leads out of the lake through a symbolic link")
        return path

    def _object(self, key: str) -> str:
        return f"{self._bucket_prefix}/{_check_key(key)}"

    def uri(self, key: str) -> str:
        """Where a key lives, as a URI (file:// or s3://)."""
        return f"{S3_SCHEME}{self._object(key)}" if self.is_s3 else self.path(key).as_uri()

    @staticmethod
    def table_key(asset: str, language: str | None = None) -> str:
        if language is None:
            return f"tables/{asset}/data.parquet"
        return f"tables/{asset}/language={language}/data.parquet"

    # -- blobs -------------------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        if self.is_s3:
            self._fs.pipe_file(self._object(key), data)
        else:
            atomic_write_bytes(self.path(key), data)
        return key

    def get_bytes(self, key: str) -> bytes:
        if self.is_s3:
            try:
                return self._fs.cat_file(self._object(key))
            except FileNotFoundError as error:
                raise FileNotFoundError(f"{self.uri(key)} does not exist") from error
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._fs.exists(self._object(key)) if self.is_s3 else self.path(key).exists()

    def size(self, key: str) -> int:
        return int(self._fs.size(self._object(key))) if self.is_s3 else self.path(key).stat().st_size

    def fingerprint(self, key: str) -> tuple[int, str]:
        """``(size, version)`` of a blob without reading it: the version is the S3 ETag, or the local file's
        modification time in nanoseconds and inode (every lake write replaces the file, so a new inode). A blob
        whose fingerprint is unchanged holds the same bytes."""
        if self.is_s3:
            info = self._fs.info(self._object(key))
            return int(info["size"]), str(info.get("ETag", ""))
        return file_fingerprint(self.path(key))

    def list(self, prefix: str, suffix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` ending with ``suffix``, sorted, temporary files skipped."""
        if self.is_s3:
            base = self._object(prefix)
            if not self._fs.exists(base):
                return
            found = sorted(self._fs.find(base))
            keys = [name.removeprefix(self._bucket_prefix + "/") for name in found]
        else:
            base_path = self.path(prefix)
            if not base_path.exists():
                return
            # os.walk does not descend into linked folders; linked files are skipped too (the lake writes none).
            keys = sorted(
                (Path(folder) / name).relative_to(self.root).as_posix()
                for folder, _dirs, names in os.walk(base_path)
                for name in names
                if not os.path.islink(os.path.join(folder, name)) and os.path.isfile(os.path.join(folder, name))
            )
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            if name.endswith(suffix) and not name.startswith(TMP_PREFIX):
                yield key

    def local_path(self, key: str) -> Path:
        """A local file with the blob's bytes: the file itself in a local lake, a cached download from S3
        (downloaded again whenever the object's ETag changed)."""
        if not self.is_s3:
            return self.path(key)
        key = _check_key(key)
        target = self.cache_dir / key
        # The object's ETag, kept beside the cache (not inside it: a model folder must hold only the model).
        etag_file = self._etag_file(key)
        etag = str(self._fs.info(self._object(key)).get("ETag", ""))
        if not target.exists() or not etag_file.exists() or etag_file.read_text() != etag:
            # Streamed to a temporary sibling, then renamed: a gigabyte WARC never sits in memory.
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace_via_temp(
                target,
                lambda tmp: self._fs.get_file(
                    self._object(key), str(tmp), chunksize=TRANSFER_PART_BYTES, max_concurrency=TRANSFER_CONCURRENCY
                ),
            )
            remove_stale_temps(target.parent, target.name)
            atomic_write_bytes(etag_file, etag.encode())
        return target

    def _etag_file(self, key: str) -> Path:
        return self.cache_dir.parent / f"{self.cache_dir.name}.etags" / key

    def temp_path(self, key: str) -> Path:
        """A fresh temporary file name beside where ``key``'s local file lives (the lake folder, or the S3 lake's
        cache), for a writer that fills a file before :meth:`put_file` takes it; never listed as a key."""
        key = _check_key(key)
        target = self.cache_dir / key if self.is_s3 else self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(temp_name(target.name))

    def put_file(self, key: str, source: str | os.PathLike[str], *, move: bool = False) -> str:
        """Store the local file ``source`` under ``key`` without reading it into memory, atomically.

        Local lake: copied to a temporary sibling and renamed into place (``move=True``: renamed directly when on
        the same file system). S3: a multipart upload (one PUT when small); with ``move=True`` the file then
        becomes the local cache copy, so :meth:`local_path` finds it without downloading it again."""
        source = Path(source)
        if self.is_s3:
            obj = self._object(key)
            self._fs.put_file(str(source), obj, chunksize=TRANSFER_PART_BYTES, max_concurrency=TRANSFER_CONCURRENCY)
            if move:
                target = self.cache_dir / _check_key(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                _replace_via_temp(target, lambda tmp: shutil.move(source, tmp))
                atomic_write_bytes(self._etag_file(_check_key(key)), str(self._fs.info(obj).get("ETag", "")).encode())
            return key
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(source, target)
                remove_stale_temps(target.parent, target.name)
                return key
            except OSError:
                pass  # another file system: copy below
        _replace_via_temp(target, lambda tmp: shutil.copyfile(source, tmp))
        if move:
            source.unlink(missing_ok=True)
        remove_stale_temps(target.parent, target.name)
        return key

    def put_dir(self, key: str, source: str | os.PathLike[str]) -> str:
        """Copy a local folder (a model or checkpoint) into the lake under ``key``, replacing what was there."""
        if self.is_s3:
            for old in list(self.list(key)):
                self._fs.rm_file(self._object(old))
            for file in sorted(p for p in Path(source).rglob("*") if p.is_file()):
                self.put_bytes(f"{key}/{file.relative_to(source).as_posix()}", file.read_bytes())
            return key
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temp_name(target.name))
        shutil.copytree(source, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        remove_stale_temps(target.parent, target.name)
        return key

    def delete(self, key: str) -> int:
        """Remove the blob ``key`` or every blob under the folder ``key``; returns how many files went."""
        if self.is_s3:
            keys = [key] if self._fs.isfile(self._object(key)) else list(self.list(key))
            for old in keys:
                self._fs.rm_file(self._object(old))
            return len(keys)
        target = self.path(key)
        if target.is_file():
            target.unlink()
            return 1
        count = sum(1 for p in target.rglob("*") if p.is_file()) if target.exists() else 0
        shutil.rmtree(target, ignore_errors=True)
        return count

    def local_dir(self, key: str) -> Path:
        """A local folder holding the blob folder ``key`` (a local lake's own folder, or a cached S3 copy)."""
        if not self.is_s3:
            folder = self.path(key)
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a folder")
            return folder
        keys = list(self.list(key))
        if not keys:
            raise FileNotFoundError(f"{self.uri(key)} holds no files")
        for blob in keys:
            self.local_path(blob)
        return self.cache_dir / _check_key(key)

    # -- tables ------------------------------------------------------------------------------------------------
    def write_table(self, asset: str, language: str | None, frame: pl.DataFrame) -> str:
        """Atomically replace the (asset, language) table with ``frame``; returns its key."""
        key = self.table_key(asset, language)
        if self.is_s3:
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd", statistics=True)
            return self.put_bytes(key, buffer.getvalue())
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temp_name(target.name))
        try:
            with open(tmp, "wb") as handle:
                _write_parquet(frame, handle)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        remove_stale_temps(target.parent, target.name)
        return key

    def has_table(self, asset: str, language: str | None = None) -> bool:
        return self.exists(self.table_key(asset, language))

    def read_table(self, asset: str, language: str | None = None) -> pl.DataFrame:
        """The (asset, language) table; :class:`TableNotFoundError` names what to materialize first."""
        key = self.table_key(asset, language)
        if not self.exists(key):
            where = f" for language {language!r}" if language else ""
            raise TableNotFoundError(f"table {asset!r}{where} does not exist yet: materialize {asset} first")
        if self.is_s3:
            return pl.read_parquet(io.BytesIO(self.get_bytes(key)))
        return pl.read_parquet(self.path(key))

    def table_keys(self, asset: str) -> list[str]:
        """Keys of every language partition of a table."""
        return [key for key in self.list(f"tables/{asset}", "data.parquet") if "/language=" in key]

    def read_table_all_languages(self, asset: str) -> pl.DataFrame:
        """Every language partition of a table, concatenated (empty frame if none exist)."""
        frames = [
            pl.read_parquet(io.BytesIO(self.get_bytes(key)) if self.is_s3 else self.path(key))
            for key in self.table_keys(asset)
        ]
        frames = [f for f in frames if f.height]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def tables(self) -> dict[str, str]:
        """Table name → glob of its Parquet files (a path or an s3:// URL), for every table in the lake."""
        names = sorted({key.split("/")[1] for key in self.list("tables", "data.parquet")})
        if self.is_s3:
            return {name: f"{S3_SCHEME}{self._bucket_prefix}/tables/{name}/**/data.parquet" for name in names}
        return {name: str(self.root / "tables" / name / "**" / "data.parquet") for name in names}
