"""Language filtering on short alt-text-like strings: per-language precision / recall of the pipeline's keep
decision and its throughput, next to langdetect on the same set.

The set is ``benchmarks/data/langid_set.tsv`` (``label<TAB>text``, hand-written image descriptions): ≥ 50 per
target language (Serbian in both scripts, both labelled ``sr``) and ≥ 15 each of the distractors hr, bs, sk, sl,
pl, mk, bg, uk, en, zh, ja. A text is *kept for L* when ``LanguageIdentifier.check(text, REGISTRY[L]).ok`` with no
page prior (``page_lang=None``), exactly as the pipeline decides. For each target L over the whole set:
precision = kept texts labelled L / kept texts; recall = kept texts labelled L / texts labelled L. Target
(issue 3): precision ≥ 0.97 and recall ≥ 0.95 for every language.

Throughput is single-threaded ``check`` calls (one text per call, so lingua takes its serial path): one pass
checks every text once, a target-language text against its own language and a distractor against the target
it is most easily confused with (``CONFUSABLE``). Medians of 5 runs (quick: 3).
"""

from __future__ import annotations

import csv
from pathlib import Path

from benchmarks.harness import Row, compare, measure
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


def evaluate(identifier: LanguageIdentifier, samples: list[tuple[str, str]]) -> tuple[dict, dict]:
    """Per target language: precision, recall and counts; plus failing examples (missed / wrongly kept)."""
    table: dict[str, dict] = {}
    failures: dict[str, dict] = {}
    for code in TARGETS:
        language = REGISTRY[code]
        kept = [identifier.check(text, language).ok for _, text in samples]
        true_pos = sum(1 for (label, _), ok in zip(samples, kept, strict=True) if ok and label == code)
        n_kept = sum(kept)
        n_label = sum(1 for label, _ in samples if label == code)
        entry = {
            "precision": round(true_pos / n_kept, 4) if n_kept else 0.0,
            "recall": round(true_pos / n_label, 4) if n_label else 0.0,
            "kept": n_kept,
            "true_pos": true_pos,
            "labelled": n_label,
        }
        if code == "sr":
            for script, cyrillic in (("Cyrl", True), ("Latn", False)):
                subset = [
                    ok
                    for (label, text), ok in zip(samples, kept, strict=True)
                    if label == "sr" and _is_cyrillic(text) == cyrillic
                ]
                entry[f"recall_{script}"] = round(sum(subset) / len(subset), 4) if subset else 0.0
        table[code] = entry
        missed = [text for (label, text), ok in zip(samples, kept, strict=True) if label == code and not ok]
        wrong = [f"[{label}] {text}" for (label, text), ok in zip(samples, kept, strict=True) if ok and label != code]
        if missed or wrong:
            failures[code] = {
                "missed": len(missed),
                "wrongly_kept": len(wrong),
                "wrongly_kept_by_label": _count_labels(
                    label for (label, _), ok in zip(samples, kept, strict=True) if ok and label != code
                ),
                "missed_examples": missed[:MAX_EXAMPLES],
                "wrongly_kept_examples": wrong[:MAX_EXAMPLES],
            }
    return table, failures


def _print_table(tables: dict[str, dict]) -> None:
    names = list(tables)
    header = "   lang  " + "  ".join(f"{name + ' P':>13} {name + ' R':>13}" for name in names)
    print(header)
    for code in TARGETS:
        cells = "  ".join(
            f"{tables[name][code]['precision']:>13.3f} {tables[name][code]['recall']:>13.3f}" for name in names
        )
        print(f"   {code:<5} {cells}")
    for name in names:
        sr = tables[name]["sr"]
        print(f"   {name}: sr recall Cyrillic {sr['recall_Cyrl']:.3f}, Latin {sr['recall_Latn']:.3f}")


def run(quick: bool = False) -> list[Row]:
    samples = load_set()
    runs = 3 if quick else 5
    targets = [REGISTRY[code] for code in TARGETS]
    identifiers = {
        "lingua": LanguageIdentifier(backend="lingua", targets=targets),
        "langdetect": LanguageIdentifier(backend="langdetect", targets=targets),
    }
    tables, failures = {}, {}
    for name, identifier in identifiers.items():
        tables[name], failures[name] = evaluate(identifier, samples)
    _print_table(tables)
    for name, per_language in failures.items():
        for code, info in per_language.items():
            print(
                f"   {name} {code}: missed {info['missed']}, wrongly kept {info['wrongly_kept']} "
                f"{info['wrongly_kept_by_label']}"
            )
            for text in info["missed_examples"]:
                print(f"      missed: {text}")
            for text in info["wrongly_kept_examples"]:
                print(f"      kept:   {text}")

    pairs = [(text, REGISTRY[label if label in TARGETS else CONFUSABLE[label]]) for label, text in samples]

    def throughput(identifier: LanguageIdentifier):
        def once() -> int:
            for text, language in pairs:
                identifier.check(text, language)
            return len(pairs)

        return measure(once, runs=runs, warmup=1)

    ours = throughput(identifiers["lingua"])
    baseline = throughput(identifiers["langdetect"])

    def summary(name: str) -> dict:
        table = tables[name]
        return {
            "min_precision": min(entry["precision"] for entry in table.values()),
            "min_recall": min(entry["recall"] for entry in table.values()),
            "targets_met": all(entry["precision"] >= 0.97 and entry["recall"] >= 0.95 for entry in table.values()),
        }

    return [
        compare(
            "language ID check (lingua + script priors)",
            "texts/s",
            ours,
            baseline,
            "langdetect alone",
            texts=len(samples),
            per_label={
                label: sum(1 for lab, _ in samples if lab == label) for label in sorted({lab for lab, _ in samples})
            },
            threads=1,
            page_prior=None,
            lingua=tables["lingua"],
            langdetect=tables["langdetect"],
            lingua_summary=summary("lingua"),
            langdetect_summary=summary("langdetect"),
            failures=failures,
        )
    ]
