"""`mella score`: keyword accuracy, METEOR or chrF of a predictions file against a references file.

One item per line in each file (a trailing newline ends the last item; an empty line is an empty item). The
corpus score is the last line printed, with 4 significant digits; ``--json`` prints one JSON object per item before
it, and the last line is then a JSON object too (value, items, skipped, bootstrap interval; full precision).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRIC_NAMES = ("keyword_accuracy", "meteor", "chrf")


def _read_items(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def score_files(metric: str, language_code: str, references: list[str], predictions: list[str]) -> dict:
    """Per-item scores and the corpus score with its bootstrap interval (seed 0)."""
    from mella_assets.evaluation import metrics
    from mella_assets.languages import REGISTRY

    if language_code not in REGISTRY:
        raise ValueError(f"unknown language {language_code!r}; known: {', '.join(sorted(REGISTRY))}")
    language = REGISTRY[language_code]
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if metric == "chrf":
        stats = metrics.chrf_statistics(references, predictions)
        items = [metrics.chrf_from_statistics(row) for row in stats]
        value = metrics.chrf_from_statistics(stats) if len(stats) else None
        interval, skipped = metrics.chrf_interval(stats), 0
    else:
        if metric == "keyword_accuracy":
            items = [metrics.keyword_accuracy(r, p, language) for r, p in zip(references, predictions, strict=True)]
        else:
            items = [
                metrics.meteor(r, p, language) if metrics.meteor_tokens(r, language) else None
                for r, p in zip(references, predictions, strict=True)
            ]
        kept = [item for item in items if item is not None]
        value = sum(kept) / len(kept) if kept else None
        interval, skipped = metrics.mean_interval(items), len(items) - len(kept)
    return {
        "metric": metric,
        "language": language_code,
        "items": items,
        "value": value,
        "n_items": len(items),
        "n_skipped": skipped,
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
    }


def significant(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, trailing zeros kept (0.6667, 100.0, 1.000); "nan" for None."""
    return "nan" if value is None else f"{value:#.{digits}g}"


def cmd_score(args: argparse.Namespace) -> int:
    try:
        result = score_files(args.metric, args.language, _read_items(args.references), _read_items(args.predictions))
    except (OSError, ValueError) as error:  # unreadable or mismatched inputs: a failure, not a usage error
        print(f"error: {error}", file=sys.stderr)
        return 1
    items = result.pop("items")
    if args.json:
        for index, item in enumerate(items, start=1):
            print(json.dumps({"item": index, result["metric"]: item}))
        print(json.dumps(result))
    else:
        print(
            f"{result['metric']} ({result['language']}): {result['n_items']} items, {result['n_skipped']} skipped, "
            f"95% CI [{significant(result['ci_low'])}, {significant(result['ci_high'])}]",
            file=sys.stderr,
        )
        print(significant(result["value"]))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="score predictions against references (one item per line)")
    parser.add_argument("metric", choices=METRIC_NAMES, help="keyword_accuracy (know), meteor or chrf (ling)")
    parser.add_argument("--language", required=True, help="ISO 639-1 code, e.g. cs, th, sr")
    parser.add_argument("--references", required=True, help="UTF-8 file, one reference per line")
    parser.add_argument("--predictions", required=True, help="UTF-8 file, one prediction per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per item, then the corpus JSON")
    parser.set_defaults(func=cmd_score)
