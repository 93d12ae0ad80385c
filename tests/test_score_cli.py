"""`mella score`: corpus score on the last line, per-item JSON, clear errors."""

import json

import pytest

from mella_assets.cli import main


@pytest.fixture
def files(tmp_path):
    refs = tmp_path / "refs.txt"
    preds = tmp_path / "preds.txt"
    refs.write_text("Pražský hrad v zimě\nhrad v zimě\na to je\n", encoding="utf-8")
    preds.write_text("hrad v Praze\nHrad, zima.\nhrad\n", encoding="utf-8")
    return str(refs), str(preds)


def test_keyword_accuracy_prints_the_corpus_score_last_with_four_significant_digits(files, capsys):
    refs, preds = files
    assert main(["score", "keyword_accuracy", "--language", "cs", "--references", refs, "--predictions", preds]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    # The summary on stderr too: no 17-digit floats.
    assert captured.err.startswith("keyword_accuracy (cs): 3 items, 1 skipped, 95% CI [")
    assert all(len(bound) <= 6 for bound in captured.err.split("[")[1].rstrip("]\n").split(", "))
    # Items: 1/3 and 1.0; the third reference has only stop words and is skipped → mean of two = 2/3.
    assert out[-1] == "0.6667"


def test_json_gives_per_item_scores_then_the_corpus_object(files, capsys):
    refs, preds = files
    main(["score", "keyword_accuracy", "--language", "cs", "--references", refs, "--predictions", preds, "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["keyword_accuracy"] for line in lines[:3]] == [pytest.approx(1 / 3), 1.0, None]
    assert lines[-1]["value"] == pytest.approx(2 / 3)
    assert (lines[-1]["n_items"], lines[-1]["n_skipped"]) == (3, 1)


def test_meteor_and_chrf_score_identical_files_at_their_maximum(tmp_path, capsys):
    refs = tmp_path / "r.txt"
    refs.write_text("Pražský hrad v zimě\n", encoding="utf-8")
    assert main(["score", "meteor", "--language", "cs", "--references", str(refs), "--predictions", str(refs)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0.9922"
    assert main(["score", "chrf", "--language", "cs", "--references", str(refs), "--predictions", str(refs)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "100.0"


def test_mismatched_line_counts_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "r.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "p.txt").write_text("a\n", encoding="utf-8")
    args = ["score", "chrf", "--language", "cs", "--references", str(tmp_path / "r.txt")]
    assert main([*args, "--predictions", str(tmp_path / "p.txt")]) == 1  # bad inputs: a failure, not a usage error
    assert "2 references but 1 predictions" in capsys.readouterr().err
