"""The lake on a real S3 API (moto_server on loopback): the same LakeStore methods as a local folder."""

import polars as pl
import pytest

from mella_assets.lib.lake import LakeStore, TableNotFoundError


@pytest.fixture
def lake(s3, tmp_path, request):
    return LakeStore(f"s3://mella/{request.node.name}", cache_dir=tmp_path / "cache")


def test_tables_round_trip_and_replace_their_partition(lake):
    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs", "cs"], "alt_text": ["a", "b"]}))
    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Karlův most"]}))
    lake.write_table("d_know", "vi", pl.DataFrame({"language": ["vi"], "alt_text": ["Phở bò"]}))
    assert lake.read_table("d_know", "cs")["alt_text"].to_list() == ["Karlův most"]
    assert sorted(lake.read_table_all_languages("d_know")["alt_text"]) == ["Karlův most", "Phở bò"]
    assert list(lake.tables()) == ["d_know"]
    assert lake.tables()["d_know"].startswith("s3://mella/")


def test_a_missing_table_names_the_asset_to_materialize(lake):
    with pytest.raises(TableNotFoundError, match="materialize images first"):
        lake.read_table("images", "th")


def test_blobs_list_and_download_to_a_local_copy(lake, tmp_path):
    lake.put_bytes("landing/cs/a.warc.gz", b"first")
    lake.put_bytes("landing/cs/b.warc.gz", b"second!")
    assert list(lake.list("landing/cs", ".warc.gz")) == ["landing/cs/a.warc.gz", "landing/cs/b.warc.gz"]
    assert lake.size("landing/cs/b.warc.gz") == 7
    local = lake.local_path("landing/cs/b.warc.gz")
    assert local.read_bytes() == b"second!" and str(local).startswith(str(tmp_path))
    lake.put_bytes("landing/cs/b.warc.gz", b"second?")  # same size, new content: the ETag tells
    assert lake.local_path("landing/cs/b.warc.gz").read_bytes() == b"second?"


def test_folders_upload_replace_and_come_back(lake, tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\x00" * 10)
    lake.put_dir("checkpoints/run1", model)
    (model / "config.json").unlink()
    lake.put_dir("checkpoints/run1", model)  # replaces: the old config.json is gone
    assert list(lake.list("checkpoints/run1")) == ["checkpoints/run1/sub/weights.bin"]
    assert (lake.local_dir("checkpoints/run1") / "sub" / "weights.bin").read_bytes() == b"\x00" * 10


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a/../../b"])
def test_keys_cannot_leave_the_prefix(lake, key):
    with pytest.raises(ValueError, match="unsafe lake key"):
        lake.put_bytes(key, b"x")


def test_duckdb_queries_the_s3_lake_with_httpfs_from_the_wheel(lake):
    import duckdb

    from mella_assets.lib.duckdb_s3 import enable_s3

    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs", "cs"], "alt_text": ["a", "b"]}))
    lake.write_table("d_know", "ko", pl.DataFrame({"language": ["ko"], "alt_text": ["김치찌개"]}))
    with duckdb.connect(":memory:") as connection:
        enable_s3(connection)
        pattern = lake.tables()["d_know"]
        rows = connection.execute(
            f"SELECT language, count(*) FROM read_parquet('{pattern}') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("cs", 2), ("ko", 1)]


def _lake_secret(connection) -> tuple[str, str]:
    (provider, secret) = connection.execute(
        "SELECT provider, secret_string FROM duckdb_secrets() WHERE name = 'mella_lake'"
    ).fetchone()
    return provider, secret


def test_duckdb_takes_credentials_from_the_aws_chain_when_no_keys_are_set(lake, tmp_path, monkeypatch):
    """Instance roles, IRSA and profiles have no AWS_ACCESS_KEY_ID: DuckDB must find the keys as boto3 does."""
    import duckdb

    from mella_assets.lib.duckdb_s3 import enable_s3
    from support.s3 import TEST_CREDENTIALS

    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Karlův most"]}))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    profile_key = "mella-profile-key"
    (tmp_path / "credentials").write_text(
        f"[lake-reader]\naws_access_key_id = {profile_key}\n"
        f"aws_secret_access_key = {TEST_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n"
    )
    (tmp_path / "config").write_text("[profile lake-reader]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "lake-reader")
    with duckdb.connect(":memory:") as connection:
        enable_s3(connection)
        provider, secret = _lake_secret(connection)
        rows = connection.execute(f"SELECT alt_text FROM read_parquet('{lake.tables()['d_know']}')").fetchall()
    assert provider == "credential_chain" and f"key_id={profile_key}" in secret
    assert rows == [("Karlův most",)]


def test_explicit_keys_win_over_the_chain(lake):
    import duckdb

    from mella_assets.lib.duckdb_s3 import enable_s3
    from support.s3 import TEST_CREDENTIALS

    with duckdb.connect(":memory:") as connection:
        enable_s3(connection)
        provider, secret = _lake_secret(connection)
    assert provider == "config" and f"key_id={TEST_CREDENTIALS['AWS_ACCESS_KEY_ID']}" in secret
