"""Facts about checkpoints and training data that the training asset, evaluation and the sensors share, and
the retraining decision (pure, so the sensor stays a thin wrapper)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from mella_assets.lib.lake import LakeStore
from mella_assets.tables import MELLA_DATASET

LATEST_CHECKPOINT_KEY = "checkpoints/LATEST.json"
CHECKPOINT_CONFIG_FILE = "mella_checkpoint.json"  # beside the weights: data version, settings, SFT config


def read_latest_checkpoint(store: LakeStore) -> dict | None:
    """The record of the newest checkpoint (key, data version, train rows, previous checkpoint…), or None."""
    return json.loads(store.get_bytes(LATEST_CHECKPOINT_KEY)) if store.exists(LATEST_CHECKPOINT_KEY) else None


def write_latest_checkpoint(store: LakeStore, record: dict) -> None:
    store.put_bytes(LATEST_CHECKPOINT_KEY, json.dumps(record, indent=2).encode())


def checkpoint_id(checkpoint_key: str) -> str:
    """``checkpoints/<id>`` → ``<id>``."""
    return checkpoint_key.rstrip("/").rsplit("/", 1)[-1]


def combined_data_version(partition_versions: Mapping[str, str]) -> str:
    """The data version of a training set: a hash of its language partitions' data versions."""
    payload = "\n".join(f"{language}:{version}" for language, version in sorted(partition_versions.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def count_train_rows(store: LakeStore) -> int:
    """Train rows over every language of the current dataset."""
    records = store.read_table_all_languages(MELLA_DATASET.name)
    return 0 if records.is_empty() else int((records["split"] == "train").sum())


def train_rows_since_checkpoint(store: LakeStore) -> tuple[int, int]:
    """(train rows now, train rows the latest checkpoint was trained on; 0 before the first)."""
    latest = read_latest_checkpoint(store)
    return count_train_rows(store), int(latest["train_rows"]) if latest else 0


@dataclass(frozen=True)
class RetrainingPolicy:
    """When the dataset has changed enough to train again."""

    min_new_rows: int = 100
    min_growth_share: float = 0.0  # 0: off; either threshold suffices
    cooldown_seconds: float = 3600.0
    max_concurrent_runs: int = 1


@dataclass(frozen=True)
class RetrainingDecision:
    request: bool
    reason: str
    growth: int


def decide_retraining(
    *,
    train_rows_now: int,
    trained_on_rows: int,
    seconds_since_last_request: float | None,
    training_runs_in_progress: int,
    policy: RetrainingPolicy,
) -> RetrainingDecision:
    """Whether to request training now, and why (or why not), checked in this order: growth, concurrency cap,
    cool-down. ``seconds_since_last_request`` is None before the sensor's first request."""
    growth = train_rows_now - trained_on_rows
    share = growth / trained_on_rows if trained_on_rows else (1.0 if growth > 0 else 0.0)
    enough = growth >= policy.min_new_rows or (policy.min_growth_share > 0 and share >= policy.min_growth_share)
    if growth <= 0 or not enough:
        return RetrainingDecision(
            False,
            f"{growth} new train rows since the latest checkpoint; retraining needs {policy.min_new_rows}"
            + (f" or a {policy.min_growth_share:.0%} growth" if policy.min_growth_share > 0 else ""),
            growth,
        )
    if training_runs_in_progress >= policy.max_concurrent_runs:
        return RetrainingDecision(
            False,
            f"{training_runs_in_progress} training run(s) queued or in progress (cap {policy.max_concurrent_runs})",
            growth,
        )
    if seconds_since_last_request is not None and seconds_since_last_request < policy.cooldown_seconds:
        wait = policy.cooldown_seconds - seconds_since_last_request
        return RetrainingDecision(
            False, f"cool-down: last request {seconds_since_last_request:.0f} s ago, {wait:.0f} s to wait", growth
        )
    return RetrainingDecision(True, f"{growth} new train rows since the latest checkpoint", growth)
