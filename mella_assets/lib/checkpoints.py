"""Facts about checkpoints and training data that the training asset and the retraining sensor share."""

from __future__ import annotations

import json

from mella_assets.lib.lake import LakeStore

LATEST_CHECKPOINT_KEY = "checkpoints/LATEST.json"


def read_latest_checkpoint(store: LakeStore) -> dict | None:
    """The record of the newest checkpoint (key, data version, train rows…), or None before the first."""
    return json.loads(store.get_bytes(LATEST_CHECKPOINT_KEY)) if store.exists(LATEST_CHECKPOINT_KEY) else None


def write_latest_checkpoint(store: LakeStore, record: dict) -> None:
    store.put_bytes(LATEST_CHECKPOINT_KEY, json.dumps(record, indent=2).encode())


def count_train_rows(store: LakeStore) -> int:
    """Train rows over every language of the current dataset."""
    records = store.read_table_all_languages("mella_dataset")
    return 0 if records.is_empty() else int((records["split"] == "train").sum())


def train_rows_since_checkpoint(store: LakeStore) -> tuple[int, int]:
    """(train rows now, train rows the latest checkpoint was trained on; 0 before the first)."""
    latest = read_latest_checkpoint(store)
    return count_train_rows(store), int(latest["train_rows"]) if latest else 0
