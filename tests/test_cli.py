import polars as pl
import pytest

from mella_assets.cli import build_parser, main
from mella_assets.lib.lake import LakeStore


@pytest.mark.parametrize("command", ["demo", "sql", "ui"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--lake" in capsys.readouterr().out


def test_sql_prints_the_query_result_over_the_lake(tmp_path, capsys):
    LakeStore(tmp_path).write_table("d_know", "th", pl.DataFrame({"language": ["th"], "alt_text": ["ต้มยำกุ้ง"]}))
    assert main(["sql", "--lake", str(tmp_path), "--format", "csv", "SELECT language, alt_text FROM d_know"]) == 0
    assert capsys.readouterr().out == "language,alt_text\nth,ต้มยำกุ้ง\n"


def test_sql_errors_are_reported_without_a_traceback(tmp_path, capsys):
    assert main(["sql", "--lake", str(tmp_path), "SELECT * FROM no_such_table"]) == 1
    assert capsys.readouterr().err.startswith("error: Catalog Error")


def test_demo_defaults_to_the_local_lake_and_instance(monkeypatch):
    monkeypatch.delenv("MELLA_LAKE", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    args = build_parser().parse_args(["demo"])
    assert (args.lake, args.dagster_home, args.site_port) == (".mella/lake", ".mella/dagster_home", 18470)


def test_ui_port_is_the_uis_port_and_site_port_the_demo_sites():
    args = build_parser().parse_args(["ui", "--port", "3333", "--site-port", "18555"])
    assert (args.port, args.site_port) == (3333, 18555)
    assert build_parser().parse_args(["ui"]).port == 3000
    assert build_parser().parse_args(["ui", "--ui-port", "3444"]).port == 3444  # the old spelling still works


def test_sql_tables_lists_each_table_with_its_row_count(tmp_path, capsys):
    lake = LakeStore(tmp_path)
    lake.write_table("d_know", "th", pl.DataFrame({"language": ["th", "th"], "alt_text": ["ต้มยำกุ้ง", "วัดอรุณ"]}))
    lake.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Pražský hrad"]}))
    assert main(["sql", "--lake", str(tmp_path), "--tables", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The tables first, then the derived views (the funnel has a row per language of d_know).
    assert lines == ["name,kind,rows,stage", "d_know,table,3,know", "funnel_by_language,view,2,"]


def test_sql_without_a_query_or_tables_is_a_usage_error(tmp_path, capsys):
    assert main(["sql", "--lake", str(tmp_path)]) == 2
    assert "--tables" in capsys.readouterr().err
