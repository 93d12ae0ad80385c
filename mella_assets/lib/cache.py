"""Content-keyed cache of model outputs in the lake, so a rerun never recomputes finished work.

One small JSON blob per key under ``cache/<namespace>/<key[:2]>/<key>.json``: written atomically as soon as an
item is done, so a run killed mid-way keeps everything it finished.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mella_assets.lib.lake import LakeStore


def content_key(*parts: Any) -> str:
    """A stable sha256 hex key of JSON-serialisable parts."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def model_fingerprint(model: str) -> str:
    """What identifies a model's behaviour: a hub id as given, or for a local folder its id plus a hash of its
    config and the names and sizes of its files (a rebuilt or retrained model gets a new fingerprint)."""
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}:{file.stat().st_size}\n".encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    return f"{path.name}@{digest.hexdigest()[:16]}"


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
