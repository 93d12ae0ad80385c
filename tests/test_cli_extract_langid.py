"""`mella extract` and `mella langid`: the pipeline's own extraction and language-ID code behind a CLI."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from mella_assets.cli import main
from mella_assets.commands import langid
from mella_assets.demo.corpus import warc_bytes
from mella_assets.lib import langid as langid_lib

PAGE = """<html lang="sr-Latn"><head><base href="https://cdn.example.rs/m/"></head><body>
<img src="kalemegdan.jpg" alt="Kalemegdan u sumrak">
<img src="blank.gif" data-src="/lazy/sava.jpg">
<picture><source srcset="a.webp 1x, b.webp 2x"><img src="c.jpg" alt=""></picture>
<img srcset="d.jpg 100w, e.jpg 900w" alt="Храм Светог Саве">
</body></html>"""


def test_extract_writes_one_row_per_candidate_with_src_and_chosen_url(tmp_path: Path):
    warc = tmp_path / "in.warc.gz"
    warc.write_bytes(warc_bytes([("https://www.example.rs/beograd", PAGE, [])]))
    out = tmp_path / "out.parquet"

    assert main(["extract", str(warc), "--output", str(out)]) == 0

    frame = pl.read_parquet(out)
    assert frame.select("page_url", "src_url", "image_url", "alt", "page_lang").rows() == [
        ("https://www.example.rs/beograd", "https://cdn.example.rs/m/kalemegdan.jpg",
         "https://cdn.example.rs/m/kalemegdan.jpg", "Kalemegdan u sumrak", "sr-latn"),
        ("https://www.example.rs/beograd", "https://cdn.example.rs/m/blank.gif",
         "https://cdn.example.rs/lazy/sava.jpg", None, "sr-latn"),
        ("https://www.example.rs/beograd", "https://cdn.example.rs/m/c.jpg",
         "https://cdn.example.rs/m/b.webp", "", "sr-latn"),
        ("https://www.example.rs/beograd", None, "https://cdn.example.rs/m/e.jpg", "Храм Светог Саве", "sr-latn"),
    ]  # fmt: skip


def test_extract_takes_nearby_text_as_context_only_with_nearby_context(tmp_path: Path):
    warc = tmp_path / "in.warc.gz"
    body = """<html><body><p>Kalemegdan u sumrak <img src="/k.jpg"></p>
    <figure><img src="/s.jpg"><figcaption>Sava</figcaption></figure></body></html>"""
    warc.write_bytes(warc_bytes([("https://www.example.rs/", body, [])]))
    default, nearby = tmp_path / "default.parquet", tmp_path / "nearby.parquet"

    assert main(["extract", str(warc), "--output", str(default)]) == 0
    assert main(["extract", str(warc), "--output", str(nearby), "--nearby-context"]) == 0

    columns = ("image_url", "context_text", "context_source")
    assert pl.read_parquet(default).select(columns).rows() == [
        ("https://www.example.rs/k.jpg", None, None),
        ("https://www.example.rs/s.jpg", "Sava", "figcaption"),
    ]
    assert pl.read_parquet(nearby).select(columns).rows() == [
        ("https://www.example.rs/k.jpg", "Kalemegdan u sumrak", "nearby"),
        ("https://www.example.rs/s.jpg", "Sava", "figcaption"),
    ]


def test_langid_prints_code_or_und_and_a_confidence_per_input_line(monkeypatch: pytest.MonkeyPatch, capsys):
    lines = [
        "Pražský hrad v zimě pokrytý sněhem",
        "Храм Светог Саве у Београду",
        "Kalemegdanska tvrđava na ušću Save u Dunav",
        "경복궁의 가을 풍경",
        "The castle in winter covered with snow",
        "",
    ]
    stdin = io.TextIOWrapper(io.BytesIO("\n".join(lines).encode() + b"\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)

    assert main(["langid", "--languages", "cs,sr,ko,ru"]) == 0

    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [label for label, _ in rows] == ["cs", "sr", "sr", "ko", "und", "und"]
    assert all(0.0 <= float(confidence) <= 1.0 for _, confidence in rows)
    assert rows[3][1] == "1.0000"


@pytest.mark.parametrize(
    ("page_args", "label"),
    [
        ([], "sr"),  # undecided by its words: kept by default
        (["--page-lang", "hr-HR"], "und"),
        (["--page-url", "https://www.kuhinja.hr/recepti"], "und"),
        (["--page-lang", "en-US", "--page-url", "https://www.kuhinja.hr/"], "und"),  # the domain beats a CMS default
        (["--page-lang", "sr-Latn", "--page-url", "https://www.kuhinja.hr/"], "sr"),
    ],
)
def test_langid_takes_the_page_prior(monkeypatch: pytest.MonkeyPatch, capsys, page_args, label):
    stdin = io.TextIOWrapper(io.BytesIO("Pršut i paški sir na drvenoj dasci\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["langid", "--languages", "sr", *page_args]) == 0
    assert capsys.readouterr().out.split("\t")[0] == label


# -- bounded lines (issue #16): a line is identified by a bounded sample, and only a bounded prefix is held ------
def _generated_lines(seed: int = 16) -> list[bytes]:
    """Lines of every length class around the caps, in one- to four-byte characters, some with CRLF."""
    rng = random.Random(seed)
    lengths = [0, 1, 999, 1000, 1001, 4003, 4004, 4005, 65_537, 1_000_000]
    lengths += [rng.randint(0, 3 * langid.MAX_LINE_BYTES) for _ in range(20)]
    alphabet = ["a", " ", "ž", "語", "😀", "\t", "\r"]
    return [("".join(rng.choice(alphabet) for _ in range(n // 2)) + "b" * (n - n // 2)).encode() for n in lengths]


def test_bounded_lines_keeps_one_bounded_prefix_per_line():
    lines = _generated_lines()
    for ending in (b"\n", b"\r\n"):
        stream = io.BytesIO(ending.join(lines) + ending)
        got = list(langid.bounded_lines(stream))
        assert len(got) == len(lines)
        for line, prefix in zip(lines, got, strict=True):
            assert len(prefix) <= langid.MAX_LINE_BYTES
            assert line.startswith(prefix.rstrip(b"\r")), (len(line), len(prefix))
    assert list(langid.bounded_lines(io.BytesIO(b"last line without a break"))) == [b"last line without a break"]


def test_langid_identifies_a_bounded_sample_of_each_line(monkeypatch: pytest.MonkeyPatch, capsys):
    lines = _generated_lines()
    seen: list[str] = []

    def record(identifier, texts, page_langs):
        seen.extend(texts)
        return [langid_lib.Detection("und", 0.0) for _ in texts]

    monkeypatch.setattr(langid, "identify_many", record)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n"), encoding="utf-8"))
    assert main(["langid", "--languages", "cs"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(seen) == len(lines)
    assert max(len(text) for text in seen) <= langid.MAX_LINE_CHARS
    word_cut = langid.line_sample(("slovo " * 400).encode())
    assert word_cut.endswith("slovo") and len(word_cut) <= langid.MAX_LINE_CHARS


def test_langid_answers_a_megabyte_line_at_once(monkeypatch: pytest.MonkeyPatch, capsys):
    big = ("Pražský hrad v zimě pokrytý sněhem " * 30_000).encode()  # about 1 MB
    stdin = io.BytesIO(big + "\nKarlův most v mlze na Vltavě\n".encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stdin, encoding="utf-8"))
    started = time.perf_counter()
    assert main(["langid", "--languages", "cs"]) == 0
    assert time.perf_counter() - started < 5
    assert [row.split("\t")[0] for row in capsys.readouterr().out.splitlines()] == ["cs", "cs"]


def test_langid_answers_each_line_while_its_input_is_still_open():
    """Streaming: the answer to a line comes before the input ends (a pipe written one line at a time), so a
    first line does not wait for the rest; the module imports only what langid needs."""
    code = (
        "import sys; from mella_assets.cli import main; code = main(['langid']); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'dagster', 'mella_assets.crawl') if m in sys.modules); "
        "print('imported', heavy, file=sys.stderr); sys.exit(code)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    # Without streaming the first answer would never come while stdin is open: end the wait after two minutes.
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        process.stdin.write("Pražský hrad v zimě pokrytý sněhem\n".encode())
        process.stdin.flush()
        assert process.stdout.readline().decode().split("\t")[0] == "cs"  # stdin is still open here
        process.stdin.write("경복궁의 가을 풍경\n".encode())
        process.stdin.flush()
        assert process.stdout.readline().decode().split("\t")[0] == "ko"
        process.stdin.close()
        assert process.wait(timeout=120) == 0
        assert process.stderr.read().decode().strip().splitlines()[-1] == "imported []"
    finally:
        watchdog.cancel()
        process.kill()
