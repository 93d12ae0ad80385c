"""`mella langid`'s first answers: lines that the script rules and CLD2 settle are answered at once and exactly;
a line that needs lingua gets a quick answer (lingua's low-accuracy models, marked ``quick``) at a terminal while
the exact models load in a child process, and the exact answer when it comes in time. The pipeline's answers are
untouched: it never builds a low-accuracy detector."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

from mella_assets.commands.langid import QUICK_MARK
from mella_assets.languages import LANGUAGES, REGISTRY
from mella_assets.lib.langid import LanguageCheck, LanguageIdentifier, identify_many, identify_without_lingua

SETTLED = {
    "Pražský hrad v zimě pokrytý sněhem": "cs",  # CLD2, reliable on 16+ letters
    "경복궁의 가을 풍경": "ko",  # Hangul
    "Ђурђевдан у Београду": "sr",  # ђ: Serbian-only Cyrillic
    "": "und",  # no letter
}
NEEDS_LINGUA = ["Praha", "Москва зимой", "Győr"]  # short: lingua decides, with all its languages


def configured() -> list:
    return list(LANGUAGES.values())


def cli(lines: list[str], *flags: str, timeout: float = 300) -> list[str]:
    """`mella langid` in a fresh process on piped input; its output lines."""
    result = subprocess.run(
        [sys.executable, "-m", "mella_assets.cli", "langid", *flags],
        input="".join(line + "\n" for line in lines).encode(),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return result.stdout.decode().splitlines()


def formatted(detection, quick: bool = False) -> str:
    return f"{detection.label}\t{detection.confidence:.4f}" + (f"\t{QUICK_MARK}" if quick else "")


def test_without_lingua_a_text_gets_the_pipelines_answer_or_none():
    identifier = LanguageIdentifier(targets=[REGISTRY[code] for code in ("cs", "ko", "sr", "ru", "hu")])
    texts = [*SETTLED, *NEEDS_LINGUA]
    settled = identify_without_lingua(identifier, texts)
    assert settled[len(SETTLED) :] == [None] * len(NEEDS_LINGUA)
    assert settled[: len(SETTLED)] == identify_many(identifier, list(SETTLED))
    assert [detection.label for detection in settled[: len(SETTLED)]] == list(SETTLED.values())


def test_quick_answers_come_from_their_own_detectors_and_leave_the_pipelines_alone():
    hungarian = REGISTRY["hu"]
    exact = LanguageIdentifier(targets=[hungarian])
    quick = LanguageIdentifier(targets=[hungarian], low_accuracy=True)
    before = exact.check("Jó", hungarian)  # two letters: lingua's unigram and bigram models (all 75 languages)
    # Low-accuracy mode reads trigrams only: a two-letter text is left unscored.
    assert quick.check("Jó", hungarian) == LanguageCheck(False, "unknown", 0.0, "language_uncertain")
    assert exact.check("Jó", hungarian) == before == LanguageCheck(False, "is", 0.48399, "wrong_language")


def test_langid_quick_after_zero_answers_lingua_lines_quick_and_marked_and_the_rest_exactly():
    lines = ["Praha", *SETTLED]
    quick = identify_many(LanguageIdentifier(targets=configured(), low_accuracy=True), ["Praha"])[0]
    exact = identify_many(LanguageIdentifier(targets=configured()), list(SETTLED))
    assert cli(lines, "--quick-after", "0") == [formatted(quick, quick=True), *map(formatted, exact)]


def test_langid_prints_the_exact_answer_from_its_worker_when_it_comes_in_time():
    # "Győr": lingua's rules settle it (ő is Hungarian's alone) without loading a model, so it comes in time.
    lines = ["Győr", "Pražský hrad v zimě pokrytý sněhem"]
    expected = [formatted(d) for d in identify_many(LanguageIdentifier(targets=configured()), lines)]
    assert expected[0] == "hu\t1.0000"
    assert cli(lines, "--quick-after", "600") == expected
    assert cli(lines) == expected  # piped input, no flag: always exact, in process


def test_langid_at_a_terminal_answers_a_lingua_line_quickly_or_exactly_and_settled_lines_exactly():
    quick = identify_many(LanguageIdentifier(targets=configured(), low_accuracy=True), ["Praha"])[0]
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mella_assets.cli", "langid"],
        stdin=follower,
        stdout=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    os.close(follower)
    try:

        def answer(line: str) -> str:
            os.write(leader, line.encode() + b"\n")
            ready, _, _ = select.select([process.stdout], [], [], 300)
            assert ready, f"no answer to {line!r}"
            return process.stdout.readline().decode().rstrip("\n")

        first = answer("Praha")
        # Quick unless the exact models loaded within QUICK_AFTER_S (not on a 2-core machine: they take 5-30 s).
        assert first == formatted(quick, quick=True) or (first.startswith("und\t") and QUICK_MARK not in first)
        assert answer("경복궁의 가을 풍경") == "ko\t1.0000"
    finally:
        process.kill()
        process.wait()
        os.close(leader)


def test_langid_with_langdetect_has_no_quick_answers():
    lines = ["Praha", "Москва зимой"]
    identifier = LanguageIdentifier("langdetect", targets=configured())
    assert cli(lines, "--backend", "langdetect", "--quick-after", "0") == [
        formatted(d) for d in identify_many(identifier, lines)
    ]
