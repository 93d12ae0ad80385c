"""Content-keyed cache of model outputs in the lake, so a rerun never recomputes finished work.

One small JSON blob per key under ``cache/<namespace>/<key[:2]>/<key>.json``: written atomically as soon as an
item is done, so a run killed mid-way keeps everything it finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mella_assets.lib.lake import LakeStore


def content_key(*parts: Any) -> str:
    """A stable sha256 hex key of JSON-serialisable parts."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# Files up to this size are hashed whole; bigger weight shards by name and size only (a rebuilt checkpoint of the
# same shape rarely keeps every small file, config and tokenizer included, byte-identical).
_HASH_FULL_BYTES = 64 * 1024 * 1024


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}:{size}\n".encode())
        if size <= _HASH_FULL_BYTES:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def model_fingerprint(model: str, adapter: str | None = None) -> str:
    """What identifies a model's behaviour, for cache keys: a hub id as given, or for a local folder its name
    plus a content hash (a rebuilt or retrained model gets a new fingerprint); an adapter adds its own."""
    parts = [model if not Path(model).is_dir() else f"{Path(model).name}@{_folder_fingerprint(Path(model))}"]
    if adapter:
        parts.append(f"{Path(adapter).name}@{_folder_fingerprint(Path(adapter))}")
    return "+".join(parts)


class JsonCache:
    """Get/put JSON values by content key in one namespace of the lake."""

    def __init__(self, store: LakeStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"cache/{self.namespace}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        lake_key = self._key(key)
        if not self.store.exists(lake_key):
            return None
        return json.loads(self.store.get_bytes(lake_key))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.put_bytes(self._key(key), json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def get_or_compute(
        self, keys: Sequence[str], compute: Callable[[list[int]], Iterable[tuple[int, dict[str, Any]]]]
    ) -> tuple[list[dict[str, Any]], int]:
        """The value of every key: cached ones are read; ``compute(missing_indices)`` yields ``(index, value)``
        for the rest, and each value is stored as soon as it is yielded (a killed run keeps what it finished).
        Returns the values in key order and how many were computed."""
        values: list[dict[str, Any] | None] = [self.get(key) for key in keys]
        missing = [i for i, value in enumerate(values) if value is None]
        if missing:
            for index, value in compute(missing):
                self.put(keys[index], value)
                values[index] = value
        return values, len(missing)  # type: ignore[return-value]


def batches(indices: Sequence[int], size: int) -> Iterable[list[int]]:
    """Consecutive chunks of at most ``size`` indices."""
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])
