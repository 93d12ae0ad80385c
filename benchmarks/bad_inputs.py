"""The bad-input report: every case of the corpus (tests/support/bad_inputs*.py: named cases and generated
families over WARC/HTML, URLs, HTTP behaviour, images, text and SQL) run through its stage code, with its outcome,
seconds and peak RSS; written to benchmarks/results/bad_inputs.md.

python -m benchmarks.bad_inputs [--output PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import machine

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "bad_inputs.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULT, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))  # the corpus lives with the tests that assert it
    from support.bad_inputs_generated import (
        MAX_CASE_RSS_MB,
        MAX_CASE_SECONDS,
        all_cases,
        render_corpus_report,
        run_corpus,
    )

    cases = all_cases()
    rows, load_seconds = run_corpus(cases=cases)
    info = machine()
    text = render_corpus_report(
        rows, cases, load_seconds, f"{info['cpus']} CPUs, {info['platform']}, Python {info['python']}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text.split("\n## Cases", 1)[0])
    within = all(r.ok and r.seconds <= MAX_CASE_SECONDS and r.added_rss_mb <= MAX_CASE_RSS_MB for r in rows)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
