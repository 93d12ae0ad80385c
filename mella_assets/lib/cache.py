"""Content-keyed cache of model outputs in the lake, so a rerun never recomputes finished work.

One small JSON blob per key under ``cache/<namespace>/<key[:2]>/<key>.json``: written atomically as soon as an
item is done, so a run killed mid-way keeps everything it finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mella_assets.lib.watchdog import StageTimeout, check_deadline

if TYPE_CHECKING:  # only a type here: the model code (vlm, translation) imports this module without the lake stack
    from mella_assets.lib.lake import LakeStore


def content_key(*parts: Any) -> str:
    """A stable sha256 hex key of JSON-serialisable parts."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# Files up to this size are hashed whole; bigger weight shards by name and size only (a rebuilt checkpoint of the
# same shape rarely keeps every small file, config and tokenizer included, byte-identical).
_HASH_FULL_BYTES = 64 * 1024 * 1024


# Files that describe how a checkpoint was made (run paths, timestamps), not how it behaves: left out of the
# fingerprint, so the same weights trained in another folder or lake keep the same cache keys.
_RUN_RECORD_FILES = {"training_state.json", "mella_checkpoint.json", "README.md", "build.json"}
# Keys of a config that name where the base model was loaded from (the base has a fingerprint of its own).
_LOCATION_KEYS = ("base_model_name_or_path",)


def _fingerprint_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name == "adapter_config.json":
        config = json.loads(data)
        for key in _LOCATION_KEYS:
            config.pop(key, None)
        data = json.dumps(config, sort_keys=True).encode()
    return data


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _RUN_RECORD_FILES):
        size = path.stat().st_size
        data = _fingerprint_bytes(path) if size <= _HASH_FULL_BYTES else b""
        digest.update(f"{path.relative_to(folder).as_posix()}:{len(data) if data else size}\n".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def model_fingerprint(model: str, adapter: str | None = None) -> str:
    """What identifies a model's behaviour, for cache keys: a hub id as given, or for a local folder its name
    plus a content hash (a rebuilt or retrained model gets a new fingerprint); an adapter adds its own."""
    parts = [model if not Path(model).is_dir() else f"{Path(model).name}@{_folder_fingerprint(Path(model))}"]
    if adapter:
        parts.append(f"{Path(adapter).name}@{_folder_fingerprint(Path(adapter))}")
    return "+".join(parts)


class JsonCache:
    """Get/put JSON values by content key in one namespace of the lake.

    ``hits`` / ``misses`` count lookups through :meth:`get_or_compute` (what assets report as cache metadata);
    ``stored`` counts values written.
    """

    def __init__(self, store: LakeStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self.stored = 0

    @property
    def hit_rate(self) -> float | None:
        """Share of lookups answered from the cache (None before any lookup)."""
        total = self.hits + self.misses
        return round(self.hits / total, 4) if total else None

    def _key(self, key: str) -> str:
        return f"cache/{self.namespace}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        lake_key = self._key(key)
        if not self.store.exists(lake_key):
            return None
        return json.loads(self.store.get_bytes(lake_key))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.put_bytes(self._key(key), json.dumps(value, ensure_ascii=False).encode("utf-8"))
        self.stored += 1

    def get_or_compute(
        self,
        keys: Sequence[str],
        compute: Callable[[list[int]], Iterable[tuple[int, dict[str, Any]]]],
        stop_at_deadline: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """The value of every key: cached ones are read; ``compute(missing_indices)`` yields ``(index, value)``
        for the rest, and each value is stored as soon as it is yielded (a killed run keeps what it finished).
        Returns the values in key order (None where ``compute`` yielded nothing for a key: a failed item, which
        stays uncached so the next run retries it) and how many were missing from the cache.

        Past the stage deadline it raises :class:`~mella_assets.lib.watchdog.StageTimeout` after storing the item
        in hand; with ``stop_at_deadline`` it leaves the deadline to ``compute``, which stops between its batches
        (:func:`~mella_assets.lib.watchdog.deadline_passed`) so no finished item of a batch is lost."""
        values: list[dict[str, Any] | None] = [self.get(key) for key in keys]
        # A key asked for twice (two identical captions) is computed once and shared.
        first: dict[str, int] = {}
        for i, value in enumerate(values):
            if value is None:
                first.setdefault(keys[i], i)
        missing = list(first.values())
        self.misses += len(missing)
        self.hits += sum(1 for value in values if value is not None)
        if missing:
            for index, value in compute(missing):
                self.put(keys[index], value)
                values[index] = value
                if not stop_at_deadline:
                    check_deadline()  # a stage that stalls between items fails instead of hanging (lib/watchdog.py)
            for i, key in enumerate(keys):
                if values[i] is None and key in first:
                    values[i] = values[first[key]]
        return values, len(missing)  # type: ignore[return-value]


def batches(indices: Sequence[int], size: int) -> Iterable[list[int]]:
    """Consecutive chunks of at most ``size`` indices."""
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


@dataclass(frozen=True)
class ItemFailure:
    """An item whose generation raised on its own (not only inside its batch): a reject, never cached."""

    reason: str
    detail: str


class ConfigurationError(RuntimeError):
    """An error that blames the setup (a refused key, a wrong URL or model), never an item: it propagates through
    :class:`PerItemCalls`, and the step fails without retries (``specs.retried_only_when_remote``)."""


class PerItemCalls:
    """Calls a model on a batch so that one bad item costs itself, not its batch or the stage.

    ``calls(function, batch, reason)`` returns ``function(batch)``; if that raises, each item is tried alone and
    one that still raises gets an :class:`ItemFailure` (``reason``, the error) in its place. A model that raises on
    every item it is given (two or more) is broken, not its inputs: :meth:`check_model` then re-raises the first
    error, so a wrong model path or a missing dependency fails the stage instead of rejecting every row. A
    :class:`StageTimeout` or :class:`ConfigurationError` is never an item's fault and propagates."""

    def __init__(self) -> None:
        self.attempted = 0
        self.errors: list[Exception] = []

    def __call__(self, function: Callable[[list[int]], list[Any]], batch: list[int], reason: str) -> list[Any]:
        self.attempted += len(batch)
        try:
            return list(function(batch))
        except (StageTimeout, ConfigurationError):
            raise
        except Exception as error:
            if len(batch) == 1:
                return [self._failure(error, reason)]
        results: list[Any] = []
        for index in batch:
            try:
                results.extend(function([index]))
            except (StageTimeout, ConfigurationError):
                raise
            except Exception as error:
                results.append(self._failure(error, reason))
        return results

    def _failure(self, error: Exception, reason: str) -> ItemFailure:
        self.errors.append(error)
        return ItemFailure(reason, f"{type(error).__name__}: {error}"[:200])

    def check_model(self) -> None:
        """Re-raise the first error when every item given to the model raised (two or more items)."""
        if self.attempted >= 2 and len(self.errors) == self.attempted:
            raise RuntimeError(
                f"the model raised on every one of the {self.attempted} items it was given: it is broken, not "
                f"the items (first error: {type(self.errors[0]).__name__}: {self.errors[0]})"
            ) from self.errors[0]


@dataclass
class CachedRun:
    """What one cached generation run did: cache counters, model time and failures by reason."""

    items: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    model_seconds: float = 0.0

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return round(self.cache_hits / total, 4) if total else None

    def metadata(self, unit: str) -> dict[str, Any]:
        """Flat metadata: counters, hit rate and generated items per second of model time."""
        generated = self.cache_misses - sum(self.failed.values())
        return {
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_rate": self.cache_hit_rate,
            "generated": self.cache_misses,
            "from_cache": self.cache_hits,
            "model_seconds": round(self.model_seconds, 3),
            f"generated_{unit}_per_second": round(generated / self.model_seconds, 2) if self.model_seconds else None,
        }
