import os

import polars as pl
import pytest

from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import LakeStore, TableNotFoundError


def test_table_write_replaces_the_partition_and_leaves_no_temporary_file(tmp_path):
    lake = LakeStore(tmp_path)
    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs", "cs"], "alt_text": ["a", "b"]}))
    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["c"]}))
    assert lake.read_table("d_know", "cs")["alt_text"].to_list() == ["c"]
    assert os.listdir(tmp_path / "tables" / "d_know" / "language=cs") == ["data.parquet"]


def test_a_failed_write_keeps_the_previous_table(tmp_path):
    lake = LakeStore(tmp_path)
    lake.write_table("d_know", "cs", pl.DataFrame({"x": [1]}))
    unwritable = pl.DataFrame({"x": [object()]})  # Python objects have no Parquet type
    with pytest.raises(pl.exceptions.ComputeError):
        lake.write_table("d_know", "cs", unwritable)
    assert lake.read_table("d_know", "cs")["x"].to_list() == [1]
    assert os.listdir(tmp_path / "tables" / "d_know" / "language=cs") == ["data.parquet"]


def test_reading_a_missing_table_names_the_asset_to_materialize(tmp_path):
    with pytest.raises(TableNotFoundError, match="materialize raw_crawl first"):
        LakeStore(tmp_path).read_table("raw_crawl", "th")


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "images/../../x", "tables/.hidden", ""])
def test_lake_keys_cannot_leave_the_root(tmp_path, key):
    with pytest.raises(ValueError, match="unsafe lake key"):
        LakeStore(tmp_path).put_bytes(key, b"x")


def test_catalog_has_one_view_per_table_across_languages(tmp_path):
    lake = LakeStore(tmp_path)
    lake.write_table(
        "d_know", "cs", pl.DataFrame({"language": ["cs", "cs"], "alt_text": ["Pražský hrad", "Karlův most"]})
    )
    lake.write_table("d_know", "vi", pl.DataFrame({"language": ["vi"], "alt_text": ["Phở bò Hà Nội"]}))
    lake.write_table("mella_export", None, pl.DataFrame({"key": ["exports/x/README.md"]}))
    counts = run_sql(lake, "SELECT language, count(*) AS n FROM d_know GROUP BY 1 ORDER BY 1")
    assert counts.rows() == [("cs", 2), ("vi", 1)]
    assert run_sql(lake, "SELECT key FROM mella_export").rows() == [("exports/x/README.md",)]


def test_model_fingerprint_ignores_where_and_when_a_checkpoint_was_made(tmp_path):
    import json

    from mella_assets.lib.cache import model_fingerprint

    def checkpoint(folder, run_path, weights=b"\x01\x02"):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "config.json").write_text('{"hidden_size": 64}')
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": run_path}))
        (folder / "training_state.json").write_text(json.dumps({"output_dir": run_path}))
        return str(folder)

    here = checkpoint(tmp_path / "a" / "ckpt", "/tmp/run-1/base")
    there = checkpoint(tmp_path / "b" / "ckpt", "/home/someone/elsewhere/base-model")
    other_weights = checkpoint(tmp_path / "c" / "ckpt", "/tmp/run-1/base", weights=b"\x01\x03")
    assert model_fingerprint(here) == model_fingerprint(there)
    assert model_fingerprint(here) != model_fingerprint(other_weights)
