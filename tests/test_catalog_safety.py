"""The SQL catalog over a hostile or shared lake (issue #16): folder names never become SQL, and `mella sql` is
read-only over the lake's tables unless ``--allow-external`` says otherwise, on a local folder and on S3."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import string
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mella_assets.cli import main
from mella_assets.lib.catalog import (
    DERIVED_VIEWS,
    TABLE_NAME,
    ReadOnlyCatalogError,
    open_catalog,
    quote_identifier,
    quote_literal,
    run_sql,
    to_csv,
)
from mella_assets.lib.lake import LakeStore

SEED = 16


def hostile_names(witness: str, count: int = 40) -> list[str]:
    """Folder names a lake could be handed: SQL that would write the file ``witness`` (a relative path: a folder
    name has no "/") if run, quotes, separators, glob characters, upper case, non-ASCII, and seeded random
    strings of them."""
    crafted = [
        f"x\" AS SELECT 1; COPY (SELECT 'pwned') TO '{witness}'; CREATE VIEW \"y",
        f"d_know\"; COPY (SELECT 1) TO '{witness}' --",
        "x'); COPY (SELECT 1) TO '" + str(witness) + "'; --",
        'a"b',
        "a'b",
        "a;b",
        "a b",
        "a-b",
        "a*b",
        "a[b]",
        "a?b",
        "D_KNOW",
        "1table",
        "ľudia",
        "t\u202eab",
        "t\nx",
        "." + "a" * 10,
        "a" * 64,
    ]
    rng = random.Random(SEED)
    alphabet = string.ascii_letters + string.digits + "_\"';-.,()*?[] \t$%&|\\{}!`=+<>~^ľ€\u202e"
    while len(crafted) < count:
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        if name not in {".", ".."} and not TABLE_NAME.fullmatch(name):
            crafted.append(name)
    return crafted


def lake_with_hostile_folders(root: Path, witness: str) -> tuple[LakeStore, list[str]]:
    store = LakeStore(root)
    store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Karlův most"]}))
    names = []
    for name in hostile_names(witness):
        folder = root / "tables" / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        pl.DataFrame({"language": ["cs"], "n": [1]}).write_parquet(folder / "data.parquet")
        names.append(name)
    return store, names


def test_hostile_folder_names_never_run_sql_and_are_skipped_by_name(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the SQL in the names would write its witness
    store, _names = lake_with_hostile_folders(tmp_path / "lake", "pwned.csv")
    hostile = set(store.tables()) - {"d_know"}
    assert len(hostile) >= 30
    with caplog.at_level(logging.WARNING, logger="mella_assets.lib.catalog"):
        rows = run_sql(store, "SELECT table_name FROM information_schema.tables ORDER BY 1").rows()
    assert not (tmp_path / "pwned.csv").exists()
    assert {name for (name,) in rows} - set(DERIVED_VIEWS) == {"d_know"}
    skipped = "\n".join(record.getMessage() for record in caplog.records)
    assert all(f"tables/{name!r} skipped" in skipped for name in hostile), skipped
    assert run_sql(store, "SELECT alt_text FROM d_know").rows() == [("Karlův most",)]


def test_quoting_round_trips_any_name_and_any_literal():
    rng = random.Random(SEED)
    alphabet = string.printable + "ľ€\u202e\"'"
    with duckdb.connect() as connection:
        for _ in range(200):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))).replace("\x00", "")
            (row,) = connection.execute(f"SELECT {quote_literal(name)} AS {quote_identifier(name)}").fetchall()
            assert row == (name,)
            assert connection.description[0][0] == name


@pytest.fixture
def lake(tmp_path) -> LakeStore:
    store = LakeStore(tmp_path / "lake")
    store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs", "cs"], "alt_text": ["a", "b"]}))
    return store


@pytest.mark.parametrize(
    "statement",
    [
        "COPY d_know TO '{outside}/out.csv'",
        "COPY (SELECT 1) TO '{tables}/d_know/evil.parquet'",
        "EXPORT DATABASE '{outside}/dump'",
        "ATTACH '{tables}/x.duckdb' AS x",
        "ATTACH ':memory:' AS m",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; COPY (SELECT 1) TO '{outside}/second.csv'",
        "CALL pragma_version()",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}/explained.csv'",
    ],
)
def test_statements_other_than_select_are_refused_and_write_nothing(lake, tmp_path, statement):
    query = statement.format(outside=tmp_path, tables=lake.location("tables"))
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ReadOnlyCatalogError, match="only SELECT"):
        run_sql(lake, query)
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_blob('{outside}/secret.txt')",
        "SELECT * FROM read_parquet('{outside}/other.parquet')",
        "SELECT * FROM read_parquet('{tables}/../secret.parquet')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_json('http://127.0.0.1:9/x.json')",
    ],
)
def test_files_outside_the_lake_tables_cannot_be_read(lake, tmp_path, query):
    (tmp_path / "secret.txt").write_text("secret")
    pl.DataFrame({"secret": [1]}).write_parquet(tmp_path / "other.parquet")
    pl.DataFrame({"secret": [1]}).write_parquet(tmp_path / "lake" / "secret.parquet")
    with pytest.raises(duckdb.Error, match=r"disabled|Permission"):
        run_sql(lake, query.format(outside=tmp_path, tables=lake.location("tables")))


def test_the_connection_itself_is_confined_and_its_configuration_locked(lake):
    with open_catalog(lake) as connection:
        with pytest.raises(duckdb.Error):
            connection.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            connection.execute("SELECT * FROM read_text('/etc/hostname')")
        assert connection.execute("SELECT count(*) FROM d_know").fetchone() == (2,)
        assert connection.execute("SELECT count(*) FROM read_parquet(?)", [lake.tables()["d_know"]]).fetchone() == (2,)


def test_select_describe_show_and_summarize_work(lake):
    assert run_sql(lake, "SELECT language, count(*) AS n FROM d_know GROUP BY 1").rows() == [("cs", 2)]
    assert "alt_text" in run_sql(lake, "DESCRIBE d_know")["column_name"].to_list()
    assert "d_know" in run_sql(lake, "SHOW TABLES")["name"].to_list()
    assert run_sql(lake, "SUMMARIZE d_know").height == 2


def test_allow_external_gives_duckdb_back(lake, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert run_sql(lake, f"SELECT content FROM read_text('{tmp_path}/notes.txt')", allow_external=True).rows() == [
        ("hello",)
    ]
    run_sql(lake, f"COPY d_know TO '{tmp_path}/copy.csv'", allow_external=True)
    assert (tmp_path / "copy.csv").read_text().startswith("language,alt_text")


def test_s3_lake_reads_its_tables_and_nothing_else(s3, tmp_path, request):
    store = LakeStore(f"s3://mella/{request.node.name}", cache_dir=tmp_path / "cache")
    other = LakeStore(f"s3://mella/{request.node.name}-other", cache_dir=tmp_path / "cache-other")
    store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Karlův most"]}))
    other.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["secret"]}))
    assert run_sql(store, "SELECT alt_text FROM d_know").rows() == [("Karlův most",)]
    with pytest.raises(duckdb.Error, match=r"disabled|Permission"):
        run_sql(store, f"SELECT * FROM read_parquet('{other.tables()['d_know']}')")
    with pytest.raises(ReadOnlyCatalogError):
        run_sql(store, f"COPY d_know TO '{store.location('tables')}/d_know/evil.parquet'")
    assert [key for key in store.list("tables") if "evil" in key] == []


def test_mella_sql_refuses_copy_and_prints_nested_values_as_json_in_csv(lake, tmp_path, capsys):
    lake.write_table(
        "raw_crawl",
        "cs",
        pl.DataFrame(
            {
                "language": ["cs", "cs"],
                "images": [[{"url": "https://x.cz/a.jpg", "alt": 'Hrad "Praha"'}], None],
                "sizes": [[1, 2], []],
                "blob": [b"\x00\xff", None],
            }
        ),
    )
    lake_arg = str(tmp_path / "lake")
    assert main(["sql", "--lake", lake_arg, "--format", "csv", "SELECT images, sizes, blob FROM raw_crawl"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["images", "sizes", "blob"]
    assert json.loads(rows[1][0]) == [{"url": "https://x.cz/a.jpg", "alt": 'Hrad "Praha"'}]
    assert rows[1][1:] == ["[1, 2]", "00ff"]
    assert rows[2] == ["", "[]", ""]
    assert main(["sql", "--lake", lake_arg, f"COPY d_know TO '{tmp_path}/x.csv'"]) == 1
    assert "only SELECT" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_to_csv_keeps_flat_columns_as_polars_writes_them():
    frame = pl.DataFrame({"a": [1, None], "b": ["x,y", "z"]})
    assert to_csv(frame) == frame.write_csv()
