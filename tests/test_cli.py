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
    assert (args.lake, args.dagster_home, args.port) == (".mella/lake", ".mella/dagster_home", 18470)
