"""One lake interface, two implementations: ``LakeStore(root)`` gives a ``LocalLake`` or an ``S3Lake``; folders
replace folders without a moment where readers see neither (local: a renamed temporary folder; S3: new files
first, stale keys after); the Lake resource keeps one store (one S3 client) for its life."""

import polars as pl
import pytest

from mella_assets.lib.lake import LakeStore, LocalLake, S3Lake, open_lake, replace_atomically
from mella_assets.resources.lake import Lake


def test_the_root_chooses_the_implementation(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # no request is made
    local, remote = LakeStore(tmp_path), LakeStore("s3://bucket/lake/")
    assert type(local) is LocalLake and type(remote) is S3Lake
    assert isinstance(local, LakeStore) and isinstance(remote, LakeStore)
    assert type(open_lake(str(tmp_path))) is LocalLake and type(open_lake("s3://bucket/lake")) is S3Lake
    assert remote.root_uri == "s3://bucket/lake" and local.root_uri == str(tmp_path.resolve())
    assert (local.location("a/b.json"), remote.location("a/b.json")) == (
        str(tmp_path.resolve() / "a" / "b.json"),
        "s3://bucket/lake/a/b.json",
    )
    assert local.direct_path("work/x") == tmp_path.resolve() / "work" / "x" and remote.direct_path("work/x") is None
    assert not hasattr(local, "is_s3") and not hasattr(remote, "is_s3")


def test_an_s3_lake_takes_endpoint_timeouts_and_cache_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MELLA_S3_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("MELLA_LAKE_CACHE", str(tmp_path / "cache"))
    store = LakeStore("s3://bucket/lake")
    assert store.local_root == tmp_path / "cache" / "bucket" / "lake"
    assert store._fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:9"
    assert store._fs.config_kwargs["retries"]["max_attempts"] == 3


def test_the_lake_resource_keeps_one_store(tmp_path, monkeypatch):
    lake = Lake(root=str(tmp_path))
    assert lake.store is lake.store
    assert Lake(root=str(tmp_path)).store is not lake.store  # one per resource instance
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    remote = Lake(root="s3://bucket/lake")
    assert remote.store is remote.store and remote.store._fs is remote.store._fs  # one S3 client


def test_the_lake_resource_passes_blob_operations_through(tmp_path):
    lake = Lake(root=str(tmp_path))
    lake.put_bytes("landing/cs/a.warc.gz", b"warc")
    source = tmp_path / "source.bin"
    source.write_bytes(b"big")
    lake.put_file("models/m/weights.bin", source)
    assert lake.get_bytes("landing/cs/a.warc.gz") == b"warc" and lake.exists("models/m/weights.bin")
    assert list(lake.list("landing", ".warc.gz")) == ["landing/cs/a.warc.gz"]
    assert lake.size("models/m/weights.bin") == 3 and lake.fingerprint("models/m/weights.bin")[0] == 3
    assert lake.uri("landing/cs/a.warc.gz").startswith("file://") and lake.local_root == tmp_path.resolve()
    assert lake.delete("landing") == 1 and not lake.exists("landing/cs/a.warc.gz")


def test_a_local_folder_is_replaced_whole_and_a_failed_copy_keeps_the_old_one(tmp_path):
    store = LakeStore(tmp_path / "lake")
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "sub").mkdir(parents=True)
    (first / "config.json").write_text("1")
    (first / "sub" / "old.bin").write_bytes(b"old")
    second.mkdir()
    (second / "config.json").write_text("2")
    store.put_dir("checkpoints/run", first)
    store.put_dir("checkpoints/run", second)
    assert list(store.list("checkpoints")) == ["checkpoints/run/config.json"]
    assert store.get_bytes("checkpoints/run/config.json") == b"2"

    def fail(tmp):
        tmp.mkdir()
        (tmp / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(store.path("checkpoints/run"), fail)
    assert list(store.list("checkpoints")) == ["checkpoints/run/config.json"]
    assert sorted(p.name for p in (tmp_path / "lake" / "checkpoints").iterdir()) == ["run"]


def test_s3_put_dir_uploads_before_it_removes_and_streams_each_file(s3, tmp_path, monkeypatch):
    store = LakeStore("s3://mella/put-dir-order", cache_dir=tmp_path / "cache")
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "sub").mkdir(parents=True)
    (old / "config.json").write_text("old config")
    (old / "sub" / "stale.bin").write_bytes(b"stale")
    new.mkdir()
    (new / "config.json").write_text("new config")
    (new / "weights.bin").write_bytes(b"\x01" * 100)
    store.put_dir("checkpoints/run", old)
    assert store.local_dir("checkpoints/run").joinpath("sub", "stale.bin").read_bytes() == b"stale"

    seen = []
    upload = store._fs.put_file

    def watched_upload(local, remote, **options):
        # While the new files go up, the old folder stays whole and readable.
        seen.append((remote.rsplit("/", 1)[-1], store.get_bytes("checkpoints/run/sub/stale.bin")))
        return upload(local, remote, **options)

    monkeypatch.setattr(store._fs, "put_file", watched_upload)
    monkeypatch.setattr(store._fs, "pipe_file", lambda *a, **k: pytest.fail("a file went up through memory"))
    store.put_dir("checkpoints/run", new)
    assert seen == [("config.json", b"stale"), ("weights.bin", b"stale")]
    assert list(store.list("checkpoints/run")) == ["checkpoints/run/config.json", "checkpoints/run/weights.bin"]
    assert store.get_bytes("checkpoints/run/config.json") == b"new config"
    # The local copy follows: the file the lake no longer holds is gone from it too.
    folder = store.local_dir("checkpoints/run")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "config.json",
        "weights.bin",
    ]


def test_s3_tables_and_blobs_go_through_the_same_interface(s3, tmp_path):
    store = LakeStore("s3://mella/interface", cache_dir=tmp_path / "cache")
    store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["most"]}))
    assert store.has_table("d_know", "cs") and store.read_table("d_know", "cs")["alt_text"].to_list() == ["most"]
    with pytest.raises(ValueError, match="is on S3"):
        store.path("tables/d_know")
    assert store.delete("tables/d_know") == 1 and not store.has_table("d_know", "cs")
