"""One exit-code convention for every `mella` subcommand: 0 success, 1 a failure while running (a missing or
unreadable input, nothing produced), 2 a usage error (an unknown flag, a bad flag value). Errors are one line on
stderr, never a traceback unless `mella --verbose` asks for it."""

import socket
from pathlib import Path

import pytest

from mella_assets.cli import main

COMMANDS = ("cc-select", "crawl", "demo", "extract", "langid", "push", "score", "sql", "train", "ui")


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_is_a_usage_error_of_every_subcommand(command, capsys):
    code, err = run(capsys, command, "--no-such-flag")
    assert code == 2 and "error:" in err


def _missing(tmp_path: Path) -> str:
    return str(tmp_path / "missing.file")


MISSING_INPUT = {
    "extract": lambda tmp: ["extract", _missing(tmp), "-o", str(tmp / "out.parquet")],
    "score": lambda tmp: ["score", "chrf", "--language", "cs", "--references", _missing(tmp), "--predictions", "p"],
    "train": lambda tmp: ["train", "--base-model", str(tmp), "--data", _missing(tmp), "--output", str(tmp / "o")],
    "cc-select": lambda tmp: ["cc-select", "--index", _missing(tmp), "--languages", "cs", "-o", str(tmp / "s.pq")],
    "push": lambda tmp: ["push", _missing(tmp), "--repo-id", "org/name", "--dry-run"],
}


@pytest.mark.parametrize("command", sorted(MISSING_INPUT))
def test_a_missing_input_is_a_one_line_failure_without_a_traceback(command, tmp_path, capsys):
    code, err = run(capsys, *MISSING_INPUT[command](tmp_path))
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:") and "missing.file" in err
    assert "Traceback" not in err


def test_a_sql_error_is_a_failure_and_an_unknown_language_a_usage_error(tmp_path, capsys):
    code, err = run(capsys, "sql", "--lake", str(tmp_path), "SELECT * FROM no_such_table")
    assert code == 1 and err.startswith("error:") and "Traceback" not in err
    code, err = run(capsys, "cc-select", "--index", str(tmp_path), "--languages", "zz", "-o", str(tmp_path / "s"))
    assert code == 2 and "zz" in err


def test_a_crawl_that_stores_nothing_fails(tmp_path, capsys):
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, err = run(
        capsys, "crawl", "--lake", str(tmp_path), "--language", "cs", "--seed", f"http://127.0.0.1:{port}/",
        "--max-pages", "1", "--allow-network", "127.0.0.1/32", "--delay", "0",
    )  # fmt: skip
    assert code == 1 and "no page was stored" in err
    assert not list(tmp_path.glob("landing/cs/*"))


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import mella_assets.commands.score as score

    def broken(*args, **kwargs):
        raise RuntimeError("the scorer broke")

    monkeypatch.setattr(score, "score_files", broken)
    refs = tmp_path / "r.txt"
    refs.write_text("a\n", encoding="utf-8")
    argv = ["score", "chrf", "--language", "cs", "--references", str(refs), "--predictions", str(refs)]
    code, err = run(capsys, *argv)
    assert code == 1 and err.strip() == "error: the scorer broke (mella --verbose … shows the traceback)"
    with pytest.raises(RuntimeError, match="the scorer broke"):
        main(["--verbose", *argv])
