"""The table registry (mella_assets/tables.py) is the one declaration of every table: each declared table is an
asset of the code location, each asset is declared, and each write in the code names a declared table from the
asset that the registry says writes it."""

import ast
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from mella_assets.definitions import defs
from mella_assets.tables import TABLES, SchemaMismatch, rejects_table, tables_written_by

REPO = Path(__file__).resolve().parent.parent
CODE_FOLDERS = [REPO / "mella_assets", REPO / "resources", REPO / "sensors"]


def asset_keys() -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


def test_every_declared_table_is_an_asset_and_every_asset_is_declared():
    assert asset_keys() == set(TABLES)


def test_each_asset_writes_exactly_the_tables_the_registry_gives_it():
    graph = defs.resolve_asset_graph()
    for name, table in TABLES.items():
        assets_def = defs.resolve_assets_def(name)
        assert assets_def.node_def.name == table.writer, name
        assert {k.to_user_string() for k in assets_def.keys} == {t.name for t in tables_written_by(table.writer)}
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == table.stage
        assert (node.partitions_def is not None) == (table.partitioned or table.by_crawl), name


def test_every_rejects_table_is_an_asset_beside_its_table_with_the_same_parents():
    graph = defs.resolve_asset_graph()
    rejects = {t.name for t in TABLES.values() if t.is_rejects}
    assert rejects == {
        "crawl_source_rejects",
        "alt_text_rejects",
        "image_rejects",
        "caption_rejects",
        "translation_rejects",
        "mella_dataset_rejects",
    }
    for name in rejects:
        table = TABLES[name]
        assert rejects_table(table.rejects_of) is table
        # Both come from one multi_asset: the same inputs, so the same lineage in the UI.
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        assert parents == {k.to_user_string() for k in graph.get(dg.AssetKey(table.rejects_of)).parent_keys}, name
        assert defs.resolve_assets_def(name) is defs.resolve_assets_def(table.rejects_of)


def test_asset_specs_carry_each_tables_declared_columns():
    graph = defs.resolve_asset_graph()
    for name, table in TABLES.items():
        schema = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == list(table.columns), name


def _writes_in(path: Path) -> list[tuple[str, str, int]]:
    """(function, table constant or string, line) of every ``<x>.write(TABLE, ...)`` /
    ``<x>.write_batches(TABLE, ...)`` and ``write_table("name", ...)`` / ``write_table_batches("name", ...)`` call in a
    module, with the enclosing top-level function."""
    tree = ast.parse(path.read_text())
    found = []
    for top in tree.body:
        if not isinstance(top, ast.FunctionDef):
            continue
        for node in ast.walk(top):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            first = node.args[0]
            if node.func.attr in {"write", "write_batches"} and isinstance(first, ast.Name) and first.id.isupper():
                found.append((top.name, first.id, node.lineno))
            elif node.func.attr in {"write_table", "write_table_batches"} and isinstance(first, ast.Constant):
                found.append((top.name, f"'{first.value}'", node.lineno))
    return found


def test_every_table_write_in_the_code_names_a_declared_table_from_its_writer():
    seen: dict[str, set[str]] = {}
    for folder in CODE_FOLDERS:
        for path in sorted(folder.rglob("*.py")):
            for function, table, line in _writes_in(path):
                where = f"{path.relative_to(REPO)}:{line}"
                assert not table.startswith("'"), f"{where}: writes table {table} by name; use lake.write(TABLE, …)"
                assert table.lower() in TABLES, (
                    f"{where}: writes {table}, which mella_assets/tables.py does not declare"
                )
                writer = TABLES[table.lower()].writer
                # The writer itself, or its body for one shard (specs.each_shard runs it per partition of a run).
                assert function in {writer, f"_{writer}_shard"}, (
                    f"{where}: {function} writes {table}, declared as written by {writer}"
                )
                seen.setdefault(writer, set()).add(table.lower())
    # ... and every declared table is written somewhere in the code, by its writer.
    assert {t for tables in seen.values() for t in tables} == set(TABLES)


def test_the_write_check_fails_for_an_undeclared_table_and_a_wrong_writer(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text(
        "def images(lake):\n    lake.write(IMAGES, None, frame)\n    lake.write_table('mystery', None, frame)\n"
        "def d_know(lake):\n    lake.write(IMAGES, None, frame)\n"
        "def captions(lake):\n    build(lambda rows: lake.write_batches(D_KNOW, None, rows))\n"
    )
    writes = _writes_in(module)
    assert writes == [("images", "IMAGES", 2), ("images", "'mystery'", 3), ("d_know", "IMAGES", 5),
                      ("captions", "D_KNOW", 7)]  # fmt: skip
    assert TABLES["images"].writer == "images" != "d_know"
    assert _writes_in(module)[2][0] not in {"images", "_images_shard"}


def test_conform_orders_columns_casts_all_null_columns_and_names_a_mismatch():
    table = TABLES["crawl_source_rejects"]
    frame = pl.DataFrame({"reason": ["download_failed"], "uri": ["https://x/a.warc.gz"], "language": ["cs"]})
    with pytest.raises(SchemaMismatch, match=r"missing columns \['http_status'\]"):
        table.conform(frame)
    with pytest.raises(SchemaMismatch, match=r"undeclared columns \['extra'\]"):
        table.conform(frame.with_columns(pl.lit(None).alias("http_status"), pl.lit(1).alias("extra")))
    with pytest.raises(SchemaMismatch, match="http_status: String"):
        table.conform(frame.with_columns(pl.lit("404").alias("http_status")))
    conformed = table.conform(frame.with_columns(pl.lit(None).alias("http_status")))
    assert conformed.columns == ["language", "uri", "reason", "http_status"]
    assert conformed.schema["http_status"] == pl.Int64
    assert table.conform(pl.DataFrame()).schema == table.schema


def test_the_registry_declares_tables_in_graph_order():
    """The catalog's funnel takes its order from the registry: every table comes after the tables it reads."""
    graph = defs.resolve_asset_graph()
    position = {name: i for i, name in enumerate(TABLES)}
    for name in TABLES:
        for parent in graph.get(dg.AssetKey(name)).parent_keys:
            assert position[parent.to_user_string()] < position[name], f"{name} is declared before {parent}"
