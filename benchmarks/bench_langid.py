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

Page signals (``page_signals``): the pipeline's prior is the page's ``<html lang>``, else ``og:locale``, else its
national domain, else its site's (``lib/page_language.py``, ``filters.page_priors``), because most Latin-script
Serbian sentences are also correct Croatian and Bosnian. Each label's texts are dealt to generated sites of that
language (one page per text); a site carries its language on every page in one of :data:`SIGNAL_FORMS`
(``sr-Latn-RS``, ``hr_HR`` as og:locale, the ``.rs`` domain alone, ``en-US`` on a national domain, ...) or, with
probability ``s``, nowhere (no ``lang``, no ``og:locale``, a ``.com`` host). Rows ``signals_s=<s>_site_pages=1-1``
are one-page sites (the page alone decides); ``..._site_pages=1-8`` sites of 1-8 pages, where a signal-less site
is judged by its other alt texts (ekavian vs ijekavian / Croatian words). Serbian precision / recall are medians
over :data:`SIGNAL_SEEDS` seeds with min-max, from ``s = 0`` (every site says where it is from) to ``s = 1`` (text
alone for one-page sites). The texts and labels are the set's; only the pages are generated.

Throughput is single-threaded ``check`` calls (one text per call): one pass checks every text once, a
target-language text against its own language and a distractor against the target it is most easily confused with
(``CONFUSABLE``). Ours and langdetect alternate pass by pass, so that load from other processes on a shared machine
falls on both alike; medians of 5 passes each (quick: 3) after one warm-up pass.

First-line latency of `mella langid` (:data:`FIRST_LINES`, one row per kind of line): seconds from writing one
line into a fresh `mella langid` process (interpreter start and imports included) to its answer on stdout. Ours is
a terminal (a pty: quick answers while the exact models load, ``commands/langid.py``); the baseline is a pipe held
open (always the exact answer: what a terminal got before the quick answers). The two alternate, medians of 3
(quick: 1).
"""

from __future__ import annotations

import csv
import os
import pty
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from benchmarks.harness import Measurement, Row, compare
from mella_assets.know.filters import page_priors
from mella_assets.languages import REGISTRY
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.lib.text import normalize_text

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
# The national domain and the language tag of each label's pages (None: no national domain in the prior table).
NATIONAL_DOMAIN = {
    "ar": "eg",
    "cs": "cz",
    "hu": "hu",
    "ko": "kr",
    "ru": "ru",
    "sr": "rs",
    "th": "th",
    "vi": "vn",
    "hr": "hr",
    "bs": "ba",
    "sk": "sk",
    "sl": "si",
    "pl": "pl",
    "mk": "mk",
    "bg": "bg",
    "uk": "ua",
    "en": None,
    "zh": "cn",
    "ja": "jp",
}
REGION = {"ar": "EG", "sr": "RS", "hr": "HR", "bs": "BA", "cs": "CZ", "sl": "SI", "uk": "UA", "en": "US", "ko": "KR"}
# How a page that carries a signal carries it (equally likely): the forms seen on real sites.
SIGNAL_FORMS = ("lang", "lang_region", "lang_script_region", "og_locale", "domain_only", "cms_default_on_domain")
SIGNAL_SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
SIGNAL_SEEDS = 20
MAX_SITE_PAGES = 8
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


def generated_page(label: str, form: str | None, rng: random.Random) -> tuple[str | None, str | None, str]:
    """(html_lang, og_locale, page_url) of a page in ``label`` carrying its language in ``form`` (None: no
    usable signal at all)."""
    site = f"site{rng.randrange(10_000)}"
    national = NATIONAL_DOMAIN[label]
    generic = f"https://www.{site}.com/gallery"
    region = REGION.get(label, label.upper())
    script = "Cyrl" if label in ("sr", "ru", "uk", "bg", "mk") else "Latn"
    if form is None:
        return None, None, generic
    if form == "lang":
        return label, None, generic
    if form == "lang_region":
        return f"{label}-{region}", None, generic
    if form == "lang_script_region":
        return f"{label}-{script}-{region}", None, generic
    if form == "og_locale":
        return None, f"{label}_{region}", generic
    if national is None:  # no national domain: the page declares its language instead
        return label, None, generic
    url = f"https://www.{site}.{national}/gallery"
    return ("en-US" if form == "cms_default_on_domain" else None), None, url


def generated_pages(
    samples: list[tuple[str, str]], share: float, seed: int, max_site_pages: int
) -> list[tuple[str | None, str | None, str]]:
    """One generated page per sample: each label's texts are dealt to sites of 1..``max_site_pages`` pages; a
    site carries its language in one of :data:`SIGNAL_FORMS` on every page, or (probability ``share``) nowhere."""
    rng = random.Random(seed)
    pages: list[tuple[str | None, str | None, str] | None] = [None] * len(samples)
    by_label: dict[str, list[int]] = {}
    for i, (label, _) in enumerate(samples):
        by_label.setdefault(label, []).append(i)
    for label, indices in sorted(by_label.items()):
        rng.shuffle(indices)
        while indices:
            size = rng.randint(1, max_site_pages)
            site, indices = indices[:size], indices[size:]
            form = None if rng.random() < share else rng.choice(SIGNAL_FORMS)
            html_lang, og_locale, url = generated_page(label, form, rng)
            for n, i in enumerate(site):
                pages[i] = (html_lang, og_locale, f"{url}/{n}")
    return [page for page in pages if page is not None]


def evaluate_page_signals(
    identifier: LanguageIdentifier,
    samples: list[tuple[str, str]],
    share: float,
    seed: int,
    codes=("sr",),
    max_site_pages: int = 1,
) -> dict[str, dict]:
    """Precision / recall per target in ``codes`` with every text on a generated page of its labelled language
    (:func:`generated_pages`); the prior comes from ``filters.page_priors`` (page signals, then the site's) and
    the decision from ``check_many``, exactly as in ``filters.filter_alt_texts``."""
    pages = generated_pages(samples, share, seed, max_site_pages)
    texts = [text for _, text in samples]
    frame = pl.DataFrame(
        {
            "page_url": [url for _, _, url in pages],
            "html_lang": [html_lang for html_lang, _, _ in pages],
            "og_locale": [og_locale for _, og_locale, _ in pages],
            "alt_text": [normalize_text(text) for text in texts],
        },
        schema={"page_url": pl.String, "html_lang": pl.String, "og_locale": pl.String, "alt_text": pl.String},
    )
    out = {}
    for code in codes:
        priors = page_priors(frame, REGISTRY[code])
        kept = [check.ok for check in identifier.check_many(texts, REGISTRY[code], priors)]
        true_pos = sum(1 for (label, _), ok in zip(samples, kept, strict=True) if ok and label == code)
        out[code] = {
            "precision": _ratio(true_pos, sum(kept)),
            "recall": _ratio(true_pos, sum(1 for label, _ in samples if label == code)),
        }
    return out


def page_signal_sweep(identifier: LanguageIdentifier, samples: list[tuple[str, str]], seeds: int) -> dict[str, dict]:
    """Serbian precision / recall (median, min, max over ``seeds``) per share of signal-less sites, for one-page
    sites (the page alone) and for sites of 1..:data:`MAX_SITE_PAGES` pages (the site's other texts vote); and
    every target at share 0.1 (they meet the target on text alone, the prior must not cost them)."""
    sweep: dict[str, dict] = {}
    for max_site_pages in (1, MAX_SITE_PAGES):
        for share in SIGNAL_SHARES:
            runs = [
                evaluate_page_signals(identifier, samples, share, seed, max_site_pages=max_site_pages)["sr"]
                for seed in range(seeds)
            ]
            sweep[f"signals_s={share}_site_pages=1-{max_site_pages}"] = {
                metric: {
                    "median": round(statistics.median(r[metric] for r in runs), 4),
                    "min": min(r[metric] for r in runs),
                    "max": max(r[metric] for r in runs),
                }
                for metric in ("precision", "recall")
            }
    sweep["all_targets_s=0.1_seed0"] = evaluate_page_signals(identifier, samples, 0.1, 0, codes=TARGETS)
    return sweep


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


# One line of each kind `mella langid` meets first: what decides it and which models it needs.
FIRST_LINES = {
    "script rule (Hangul), no model": "경복궁의 가을 풍경",
    "CLD2 settles it, no lingua model": "Pražský hrad v zimě pokrytý sněhem",
    "short Cyrillic: lingua, 8 Cyrillic languages": "Москва зимой",
    "short Latin: lingua, 49 Latin languages": "Praha",
}


def first_line_seconds(line: str, terminal: bool) -> tuple[float, str]:
    """Seconds from writing ``line`` into a fresh `mella langid` to its answer, and the answer; stdin a pty
    (``terminal``) or a pipe left open."""
    command = [sys.executable, "-m", "mella_assets.cli", "langid"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if terminal:
        leader, follower = pty.openpty()
        process = subprocess.Popen(command, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        os.close(follower)
    else:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
    try:
        started = time.perf_counter()
        if terminal:
            os.write(leader, line.encode() + b"\n")
        else:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        answer = process.stdout.readline().decode().rstrip("\n")
        return time.perf_counter() - started, answer
    finally:
        process.kill()
        process.wait()
        if terminal:
            os.close(leader)


def first_line_rows(runs: int) -> list[Row]:
    rows = []
    for kind, line in FIRST_LINES.items():
        seconds: dict[bool, list[float]] = {True: [], False: []}
        answers: dict[bool, str] = {}
        for _ in range(runs):  # alternating, so that load from other processes falls on both alike
            for terminal in (True, False):
                elapsed, answers[terminal] = first_line_seconds(line, terminal)
                seconds[terminal].append(elapsed)
        print(f"   first line, {kind}: terminal {seconds[True]} {answers[True]!r}, pipe {seconds[False]}")
        rows.append(
            compare(
                f"`mella langid` first line, {kind}",
                "first answers/min",
                Measurement(items=1, rates=[60 / s for s in seconds[True]]),
                Measurement(items=1, rates=[60 / s for s in seconds[False]]),
                "pipe held open: exact answer only (a terminal's before quick answers)",
                line=line,
                terminal_seconds=[round(s, 2) for s in seconds[True]],
                pipe_seconds=[round(s, 2) for s in seconds[False]],
                terminal_median_s=round(statistics.median(seconds[True]), 2),
                pipe_median_s=round(statistics.median(seconds[False]), 2),
                terminal_answer=answers[True],
                pipe_answer=answers[False],
                load_average=os.getloadavg()[0],
            )
        )
    return rows


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
    sweep = page_signal_sweep(ours, samples, 5 if quick else SIGNAL_SEEDS)
    print("   Serbian with page signals (share s of sites without any): median P / R [min-max]")
    for name, entry in sweep.items():
        if name.startswith("signals_s="):
            p, r = entry["precision"], entry["recall"]
            print(
                f"   {name:<32} P {p['median']:.3f} [{p['min']:.3f}-{p['max']:.3f}]"
                f"  R {r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}]"
            )
    worst = min(sweep["all_targets_s=0.1_seed0"].items(), key=lambda item: min(item[1].values()))
    print(f"   all targets at s=0.1: lowest {worst[0]} {worst[1]}")
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
            page_signals=sweep,
        ),
        *first_line_rows(1 if quick else 3),
    ]
