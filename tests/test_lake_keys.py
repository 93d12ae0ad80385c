"""Lake keys never escape the root (issue #8): hostile keys are refused by name before any I/O, on a local lake
and on S3, and a symbolic link inside a local lake cannot lead a read or a write out of it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from mella_assets.lib.lake import LakeStore

HOSTILE_KEYS = [
    "..",
    "../outside",
    "images/../../outside",
    "images/ab/../../../../etc/passwd",
    "/etc/passwd",
    "//etc/passwd",
    "\\..\\outside",
    "images\\..\\..\\outside",
    "images/a\x00b.jpg",
    "%2e%2e/outside",
    "..%2foutside",
    "images/%2e%2e%2f%2e%2e%2foutside",
    "images/./x.jpg",
    ".hidden",
    "images/.x",
    "~/outside",
    "~root/.ssh/authorized_keys",
    "C:/Windows/x",
    "c:\\x",
    "images//x.jpg",
    " images/x.jpg",
    "images/x.jpg\n",
    "images/x.jpg\r\n",
    "images/\u2024\u2024/x",  # one-dot leaders that look like ..
    "images/\uff0e\uff0e/x",  # fullwidth full stops
    "images/\u202egpj.exe",
    "file:///etc/passwd",
    "s3://other-bucket/x",
    "images/" + "a" * 300,
    "",
    "/",
]
# What a fuzzed key is made of: separators, dots, encodings, controls, look-alikes, and harmless letters.
PIECES = ["..", ".", "/", "\\", "\x00", "%2e", "%2f", "~", ":", "a", "b1", "-", "=", " ", "\n", "\u2024", "\uff0e"]


def fuzzed_keys(count: int = 3000, seed: int = 8) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8))) for _ in range(count)]


def _files_under(folder: Path) -> set[Path]:
    return {Path(root) / name for root, _dirs, names in os.walk(folder) for name in names}


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_hostile_key_is_refused_by_a_local_lake_before_any_io(tmp_path, key):
    store = LakeStore(tmp_path / "lake")
    for operation in (store.path, store.uri, store.exists, store.get_bytes, lambda k: store.put_bytes(k, b"x")):
        with pytest.raises(ValueError, match="unsafe lake key"):
            operation(key)
    assert _files_under(tmp_path) == set()


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_hostile_key_is_refused_by_an_s3_lake_before_any_request(monkeypatch, key):
    # No server at this endpoint: a refusal that came after a request would be a connection error instead.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = LakeStore("s3://bucket/lake")
    for operation in (store.uri, store.exists, store.get_bytes, store.local_path, lambda k: store.put_bytes(k, b"x")):
        with pytest.raises(ValueError, match="unsafe lake key"):
            operation(key)


def test_fuzzed_keys_are_refused_or_stay_inside_the_root(monkeypatch, tmp_path):
    """Property: for every key, a write either raises ValueError or lands inside the lake, and the S3 object
    name of an accepted key is under the lake's prefix with no dot segment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    root = tmp_path / "lake"
    (tmp_path / "outside").mkdir()
    local, s3 = LakeStore(root), LakeStore("s3://bucket/lake")
    accepted = refused = 0
    for key in fuzzed_keys():
        try:
            local.put_bytes(key, b"x")
        except ValueError:
            refused += 1
            with pytest.raises(ValueError):
                s3.uri(key)
            continue
        accepted += 1
        assert local.path(key).resolve().is_relative_to(root)
        object_uri = s3.uri(key)
        assert object_uri.startswith("s3://bucket/lake/")
        assert not {".", ".."} & set(object_uri.removeprefix("s3://").split("/"))
    assert refused > 2000 and accepted > 50, (refused, accepted)
    assert all(path.is_relative_to(root) for path in _files_under(tmp_path))


def test_a_symlink_inside_the_lake_cannot_lead_out(tmp_path):
    root, outside = tmp_path / "lake", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the lake's")
    store = LakeStore(root)
    store.put_bytes("tables/t/data.parquet", b"inside")
    (root / "images").symlink_to(outside, target_is_directory=True)
    (root / "tables" / "t" / "leak.parquet").symlink_to(outside / "secret.txt")

    with pytest.raises(ValueError, match="symbolic link"):
        store.put_bytes("images/ab/new.jpg", b"x")
    with pytest.raises(ValueError, match="symbolic link"):
        store.get_bytes("images/secret.txt")
    with pytest.raises(ValueError, match="symbolic link"):
        store.get_bytes("tables/t/leak.parquet")
    with pytest.raises(ValueError, match="symbolic link"):
        list(store.list("images"))
    # Listing the lake skips both links: nothing outside is named, nothing was written there.
    assert list(store.list("tables")) == ["tables/t/data.parquet"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert store.get_bytes("tables/t/data.parquet") == b"inside"
