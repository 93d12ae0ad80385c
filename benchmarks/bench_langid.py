"""Language filtering on short alt-text-like strings: per-language precision / recall of the pipeline's keep
decision and its throughput, next to langdetect on the same set.

The set is ``benchmarks/data/langid_set.tsv`` (``label<TAB>text``, hand-written image descriptions): ≥ 50 per
target language (Serbian in both scripts, both labelled ``sr``) and ≥ 15 each of the distractors hr, bs, sk, sl,
pl, mk, bg, uk, en, zh, ja. A text is *kept for L* when ``LanguageIdentifier.check(text, REGISTRY[L]).ok`` with no
page prior (``page_lang=None``), exactly as the pipeline decides. For each target L over the whole set:
precision = kept texts labelled L / kept texts; recall = kept texts labelled L / texts labelled L (Serbian also
per script). ``decision_accuracy`` = share of correct keep / drop decisions over every (text, target) pair. Target
(issue 3): precision ≥ 0.97 and recall ≥ 0.95 for every language.

Variants, all on the same set: ``cascade`` (the pipeline's default), ``cascade_reject_undecided`` (a Latin text
whose words do not tell Serbian from Croatian / Bosnian is dropped instead of kept), ``cascade_page_is_label``
(every text on a page declaring its true language: an upper bound for crawls whose pages declare ``lang``), and
``langdetect`` (the same rules on langdetect's scores).

Throughput is single-threaded ``check`` calls (one text per call): one pass checks every text once, a
target-language text against its own language and a distractor against the target it is most easily confused with
(``CONFUSABLE``). Ours and langdetect alternate pass by pass, so that load from other processes on a shared machine
falls on both alike; medians of 5 passes each (quick: 3) after one warm-up pass.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Measurement, Row, compare
from mella_assets.languages import REGISTRY
from mella_assets.lib.langid import LanguageIdentifier

DATA = Path(__file__).resolve().parent / "data" / "langid_set.tsv"
TARGETS = ("ar", "cs", "hu", "ko", "ru", "sr", "th", "vi")
# The target each distractor is checked against in the throughput pass (its nearest confusion).
CONFUSABLE = {
    "hr": "sr",
    "bs": "sr",
    "mk": "sr",
    "sk": "cs",
    "sl": "cs",
    "pl": "cs",
    "bg": "ru",
    "uk": "ru",
    "en": "vi",
    "zh": "ko",
    "ja": "ko",
}
MAX_EXAMPLES = 5
MIN_PRECISION = 0.97
MIN_RECALL = 0.95


def load_set(path: Path = DATA) -> list[tuple[str, str]]:
    """(label, text) pairs of the labelled set."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row["label"].strip(), row["text"].strip()) for row in rows if row["text"].strip()]


def _is_cyrillic(text: str) -> bool:
    return any("\u0400" <= ch <= "\u04ff" for ch in text)


def _count_labels(labels) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def evaluate(
    identifier: LanguageIdentifier, samples: list[tuple[str, str]], page_is_label: bool = False
) -> tuple[dict, dict]:
    """Per target language: precision, recall and counts (Serbian also per script), plus ``decision_accuracy``
    over all targets; and the failing examples (missed / wrongly kept)."""
    table: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    texts = [text for _, text in samples]
    pages = [label if page_is_label else None for label, _ in samples]
    correct = 0
    for code in TARGETS:
        kept = [check.ok for check in identifier.check_many(texts, REGISTRY[code], pages)]
        correct += sum(1 for (label, _), ok in zip(samples, kept, strict=True) if ok == (label == code))
        true_pos = sum(1 for (label, _), ok in zip(samples, kept, strict=True) if ok and label == code)
        n_label = sum(1 for label, _ in samples if label == code)
        entry = {
            "precision": _ratio(true_pos, sum(kept)),
            "recall": _ratio(true_pos, n_label),
            "kept": sum(kept),
            "true_pos": true_pos,
            "labelled": n_label,
        }
        if code == "sr":
            for script, cyrillic in (("Cyrl", True), ("Latn", False)):
                in_script = [
                    (label, ok)
                    for (label, text), ok in zip(samples, kept, strict=True)
                    if _is_cyrillic(text) == cyrillic
                ]
                script_true_pos = sum(1 for label, ok in in_script if ok and label == "sr")
                entry[f"precision_{script}"] = _ratio(script_true_pos, sum(ok for _, ok in in_script))
                entry[f"recall_{script}"] = _ratio(script_true_pos, sum(1 for label, _ in in_script if label == "sr"))
        table[code] = entry
        missed = [text for (label, text), ok in zip(samples, kept, strict=True) if label == code and not ok]
        wrong = [(label, text) for (label, text), ok in zip(samples, kept, strict=True) if ok and label != code]
        if missed or wrong:
            failures[code] = {
                "missed": len(missed),
                "wrongly_kept": len(wrong),
                "wrongly_kept_by_label": _count_labels(label for label, _ in wrong),
                "missed_examples": missed[:MAX_EXAMPLES],
                "wrongly_kept_examples": [f"[{label}] {text}" for label, text in wrong[:MAX_EXAMPLES]],
            }
    table["decision_accuracy"] = _ratio(correct, len(samples) * len(TARGETS))
    return table, failures


def _cell(precision: float, recall: float) -> str:
    return f"P {precision:.3f} R {recall:.3f}"


def _print_table(tables: dict[str, dict]) -> None:
    names = list(tables)
    print("   " + " " * 6 + "".join(f"{name:>28}" for name in names))
    for code in TARGETS:
        cells = "".join(f"{_cell(t[code]['precision'], t[code]['recall']):>28}" for t in tables.values())
        print(f"   {code:<6}{cells}")
    for script in ("Cyrl", "Latn"):
        cells = "".join(
            f"{_cell(t['sr']['precision_' + script], t['sr']['recall_' + script]):>28}" for t in tables.values()
        )
        print(f"   sr-{script}{cells}")
    print("   acc   " + "".join(f"{t['decision_accuracy']:>28.4f}" for t in tables.values()))


def _summary(table: dict) -> dict:
    per_language = [table[code] for code in TARGETS]
    return {
        "min_precision": min(entry["precision"] for entry in per_language),
        "min_recall": min(entry["recall"] for entry in per_language),
        "decision_accuracy": table["decision_accuracy"],
        "targets_met": all(e["precision"] >= MIN_PRECISION and e["recall"] >= MIN_RECALL for e in per_language),
        "languages_missing_target": [
            code for code in TARGETS if table[code]["precision"] < MIN_PRECISION or table[code]["recall"] < MIN_RECALL
        ],
    }


def measure_alternating(fns: dict[str, Callable[[], int]], runs: int, warmup: int = 1) -> dict[str, Measurement]:
    """Like ``harness.measure`` for several functions, one timed call of each per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    items: dict[str, int] = dict.fromkeys(fns, 0)
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            items[name] = fn()
            rates[name].append(items[name] / max(time.perf_counter() - started, 1e-9))
    return {name: Measurement(items=items[name], rates=rates[name]) for name in fns}


def run(quick: bool = False) -> list[Row]:
    samples = load_set()
    runs = 3 if quick else 5
    targets = [REGISTRY[code] for code in TARGETS]
    ours = LanguageIdentifier(backend="lingua", targets=targets)
    baseline = LanguageIdentifier(backend="langdetect", targets=targets)
    variants = {
        "cascade": (ours, False),
        "cascade_reject_undecided": (
            LanguageIdentifier(backend="lingua", targets=targets, accept_undecided_serbian=False),
            False,
        ),
        "cascade_page_is_label": (ours, True),
        "langdetect": (baseline, False),
    }
    tables, failures = {}, {}
    for name, (identifier, page_is_label) in variants.items():
        tables[name], failures[name] = evaluate(identifier, samples, page_is_label)
    _print_table(tables)
    for name in ("cascade", "langdetect"):
        for code, info in failures[name].items():
            print(
                f"   {name} {code}: missed {info['missed']}, wrongly kept {info['wrongly_kept']} "
                f"{info['wrongly_kept_by_label']}"
            )
            for text in info["missed_examples"]:
                print(f"      missed: {text}")
            for text in info["wrongly_kept_examples"]:
                print(f"      kept:   {text}")

    pairs = [(text, REGISTRY[label if label in TARGETS else CONFUSABLE[label]]) for label, text in samples]

    def one_pass(identifier: LanguageIdentifier) -> Callable[[], int]:
        def once() -> int:
            for text, language in pairs:
                identifier.check(text, language)
            return len(pairs)

        return once

    rates = measure_alternating({"ours": one_pass(ours), "langdetect": one_pass(baseline)}, runs=runs)
    return [
        compare(
            "language ID check (script rules + CLD2 + lingua)",
            "texts/s",
            rates["ours"],
            rates["langdetect"],
            "langdetect, same rules",
            texts=len(samples),
            per_label=_count_labels(label for label, _ in samples),
            threads=1,
            page_prior=None,
            tables=tables,
            summaries={name: _summary(table) for name, table in tables.items()},
            failures=failures,
        )
    ]
