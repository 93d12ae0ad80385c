"""Regular expressions over hostile text run in linear time (issue #16): no pattern applied to fetched bytes, page
text, headers or lake names may backtrack super-linearly, since a match holds the GIL and a single page could stall
a partition (the old SVG sniffer took seconds on 200 bytes of ``<!--x-->``, doubling with each comment).

The property, for every compiled pattern in ``mella_assets`` (and the code that replaced the ones that were not
linear): inputs made of a prefix, a pump repeated, and a suffix, doubling in size from 16 to 16,384 characters,
each match within :func:`budget` (2 ms + 4 µs a character: linear time with ~4-100x headroom; a quadratic pattern
needs about a second at 16,384 characters, an exponential one blows the budget at a hundred). The pumps are
generated: the pattern's own literal runs (from its parse tree), pairs of them joined by a letter (``<!--x-->``),
and seeded random strings over the pattern's characters and class representatives. A size over budget is measured
twice more before it fails (a busy machine), and the doubling stops at the first failure, so a catastrophic
pattern fails in milliseconds instead of hanging.

A completeness check keeps the audit honest: every ``re.compile`` / ``regex.compile`` in the package is in
:data:`AUDITED`.
"""

from __future__ import annotations

import ast
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import mella_assets
from mella_assets.crawl import sources, warc
from mella_assets.crawl.html import charset, context, extract, srcset, urls
from mella_assets.know import boilerplate, credits, filters, images
from mella_assets.languages import REGISTRY
from mella_assets.lib import catalog, http, lake, model_paths, page_language, serbo_croatian, text
from mella_assets.ling import translation, translation_qa

SIZES = [16 * 2**k for k in range(11)]  # 16 ... 16,384 characters
SCREEN_SIZE = 1024  # every generated input doubles up to here; the finalists go on to the largest size
FINALISTS = 8
MAX_TRIPLES = 1200
SEED = 16
REPRESENTATIVES = " \t\n\r0123456789aZé.,;:/\\-_=?#&%'\"<>()[]*+!~²١"
SUFFIXES = ("", "!", "\x00")


def budget(size: int) -> float:
    """Seconds a match over ``size`` characters may take: linear, with headroom for a slow shared machine."""
    return 0.002 + 4e-6 * size


@dataclass(frozen=True)
class Target:
    """One pattern (or the function that replaced one) as the code applies it."""

    name: str
    apply: Callable[[str], object]
    pattern: str  # its source, for the generated pumps ("" when it is not a regular expression)
    as_bytes: bool = False
    tokens: tuple[str, ...] = ()  # literal runs to pump with, for patterns the standard parser cannot read
    passes: int = 1  # a function that applies its patterns in several rounds gets a budget per round


def _on(compiled: re.Pattern, method: str) -> Callable[[str], object]:
    as_bytes = isinstance(compiled.pattern, bytes)
    call = getattr(compiled, method)
    if method == "sub":
        replacement = b" " if as_bytes else " "
        return (
            (lambda value: compiled.sub(replacement, value.encode("utf-8", "surrogatepass")))
            if as_bytes
            else (lambda value: compiled.sub(replacement, value))
        )
    return (lambda value: call(value.encode("utf-8", "surrogatepass"))) if as_bytes else call


def _target(name: str, compiled, method: str, tokens: tuple[str, ...] = ()) -> Target:
    pattern = compiled.pattern.decode("latin-1") if isinstance(compiled.pattern, bytes) else compiled.pattern
    return Target(name, _on(compiled, method), pattern, isinstance(compiled.pattern, bytes), tokens)


def _encoded(function: Callable[[bytes], object]) -> Callable[[str], object]:
    return lambda value: function(value.encode("utf-8", "surrogatepass"))


_CS = REGISTRY["cs"]
_HAS_RUN = (filters.DEFAULT_FILTER_CONFIG.max_char_run, filters.DEFAULT_FILTER_CONFIG.max_unit_repeats)
# (module attribute name, target): every compiled pattern of the package, applied as the code applies it.
AUDITED: dict[str, Target] = {
    "know.images.looks_like_svg": Target(
        "know.images.looks_like_svg",
        _encoded(images.looks_like_svg),
        "",
        True,
        ("<?xml", ">", "<!--", "-->", "<!doctype svg", "<svg", " "),
    ),
    "know.images._SHA256": _target("know.images._SHA256", images._SHA256, "match"),
    "know.images._EXT": _target("know.images._EXT", images._EXT, "match"),
    "crawl.html.extract._LEADING_INT": _target("crawl.html.extract._LEADING_INT", extract._LEADING_INT, "fullmatch"),
    "crawl.html.extract._TAG": _target("crawl.html.extract._TAG", extract._TAG, "findall"),
    "crawl.html.extract._int_attr": Target(
        "crawl.html.extract._int_attr", extract._int_attr, extract._LEADING_INT.pattern
    ),
    "crawl.html.extract._PLACEHOLDER": _target("crawl.html.extract._PLACEHOLDER", extract._PLACEHOLDER, "search"),
    "crawl.html.srcset._SRCSET_CANDIDATE": _target(
        "crawl.html.srcset._SRCSET_CANDIDATE", srcset._SRCSET_CANDIDATE, "findall"
    ),
    "crawl.html.charset._META_CHARSET": _target("crawl.html.charset._META_CHARSET", charset._META_CHARSET, "search"),
    "crawl.html.charset._meta_label": Target(
        "crawl.html.charset._meta_label",
        _encoded(charset._meta_label),
        charset._CHARSET_PARAM,
        True,
        ("<meta", ">", "charset", "="),
    ),
    "crawl.html.charset._HEADER_CHARSET": _target(
        "crawl.html.charset._HEADER_CHARSET", charset._HEADER_CHARSET, "search"
    ),
    "crawl.html.context._WHITESPACE": _target("crawl.html.context._WHITESPACE", context._WHITESPACE, "sub"),
    "crawl.html.urls._FAST_URL": _target("crawl.html.urls._FAST_URL", urls._FAST_URL, "match"),
    "crawl.html.urls._DOT_SEGMENTS": _target("crawl.html.urls._DOT_SEGMENTS", urls._DOT_SEGMENTS, "match"),
    "crawl.html.urls._SIMPLE_BASE": _target("crawl.html.urls._SIMPLE_BASE", urls._SIMPLE_BASE, "match"),
    "crawl.sources._COMMON_CRAWL_PATH": _target(
        "crawl.sources._COMMON_CRAWL_PATH", sources._COMMON_CRAWL_PATH, "fullmatch"
    ),
    "crawl.warc._CHUNK_SIZE": _target("crawl.warc._CHUNK_SIZE", warc._CHUNK_SIZE, "fullmatch"),
    "crawl.warc._CONTENT_LENGTH": _target("crawl.warc._CONTENT_LENGTH", warc._CONTENT_LENGTH, "search"),
    "lib.http._CONTENT_RANGE": _target("lib.http._CONTENT_RANGE", http._CONTENT_RANGE, "fullmatch"),
    "lib.http._HEADER_NUMBER": _target("lib.http._HEADER_NUMBER", http._HEADER_NUMBER, "fullmatch"),
    "lib.text._WORD": _target("lib.text._WORD", text._WORD, "findall", ("a", "1", "\u0301", " ")),
    "lib.text._HAS_LETTER": _target("lib.text._HAS_LETTER", text._HAS_LETTER, "search", ("1", " ", "a")),
    "lib.page_language._PRIMARY_SUBTAG": _target(
        "lib.page_language._PRIMARY_SUBTAG", page_language._PRIMARY_SUBTAG, "fullmatch"
    ),
    "lib.lake._SAFE_PART": _target("lib.lake._SAFE_PART", lake._SAFE_PART, "fullmatch"),
    "lib.lake._TEMP_NAME": _target("lib.lake._TEMP_NAME", lake._TEMP_NAME, "fullmatch"),
    "lib.serbo_croatian._WORD": _target("lib.serbo_croatian._WORD", serbo_croatian._WORD, "findall"),
    "lib.model_paths._HUB_ID": _target("lib.model_paths._HUB_ID", model_paths._HUB_ID, "fullmatch"),
    "lib.catalog.TABLE_NAME": _target("lib.catalog.TABLE_NAME", catalog.TABLE_NAME, "fullmatch"),
    "know.boilerplate._boilerplate_pattern": Target(
        "know.boilerplate._boilerplate_pattern",
        lambda value: filters.is_boilerplate(value, _CS),
        "",
        tokens=("logo", "ikona", " ", "foto", "a", "zpět nahoru", "reklama", ":", "(x)"),
    ),
    "know.boilerplate._ad_marker_pattern": _target(
        "know.boilerplate._ad_marker_pattern", boilerplate._ad_marker_pattern(_CS), "search"
    ),
    "know.boilerplate._WORD": _target("know.boilerplate._WORD", boilerplate._WORD, "findall"),
    "know.boilerplate._TITLE_SEPARATORS": _target(
        "know.boilerplate._TITLE_SEPARATORS", boilerplate._TITLE_SEPARATORS, "split"
    ),
    "know.boilerplate._DOMAIN_LIKE": _target("know.boilerplate._DOMAIN_LIKE", boilerplate._DOMAIN_LIKE, "search"),
    "know.credits._HAS_LOWER": _target("know.credits._HAS_LOWER", credits._HAS_LOWER, "search"),
    "know.credits._TRIM": _target("know.credits._TRIM", credits._TRIM, "sub"),
    "know.credits._BRACKETED": _target("know.credits._BRACKETED", credits._BRACKETED, "sub"),
    # Each credit pattern as strip_credits applies it (the whole function skips texts over MAX_STRIP_CHARS, which
    # would hide a slow pattern).
    "know.credits._credit_patterns.in_brackets": _target(
        "know.credits._credit_patterns.in_brackets", credits._credit_patterns().in_brackets, "match"
    ),
    "know.credits._credit_patterns.agency_at_end": Target(
        "know.credits._credit_patterns.agency_at_end",
        lambda value: credits._credit_patterns().agency_at_end.search(value[-40:]),
        credits._credit_patterns().agency_at_end.pattern,
    ),
    "know.credits._credit_patterns.leading": _target(
        "know.credits._credit_patterns.leading", credits._credit_patterns().leading, "match"
    ),
    "know.credits._credit_patterns.byline": _target(
        "know.credits._credit_patterns.byline", credits._credit_patterns().byline, "match"
    ),
    **{
        f"know.credits._credit_patterns.trailing[{i}]": Target(
            f"know.credits._credit_patterns.trailing[{i}]",
            lambda value, pattern=pattern: pattern.search(value, max(0, len(value) - credits.TAIL_CHARS)),
            pattern.pattern,
        )
        for i, pattern in enumerate(credits._credit_patterns().trailing)
    },
    "know.credits._credit_patterns": Target(
        "know.credits._credit_patterns",
        credits.strip_credits,
        "",
        tokens=("Foto:", "ČTK", " ", "/", "사진=", "(", ")", "a@b.cz", "2024.5.27", "기자 =", ",", "Reuters"),
        passes=credits._MAX_ROUNDS,  # each pattern above is also timed alone, on one pass
    ),
    "know.filters._has_run": Target(
        "know.filters._has_run",
        lambda value: filters._has_run(value, rf"([^\d\s])\1{{{_HAS_RUN[0]},}}", rf"(\D{{2,3}})\1{{{_HAS_RUN[1]},}}"),
        "",
        tokens=("a", "ab", "abc", " ", "1"),
    ),
    "ling.translation._SENTENCE_END": _target("ling.translation._SENTENCE_END", translation._SENTENCE_END, "split"),
    "ling.translation._CLAUSE_END": _target("ling.translation._CLAUSE_END", translation._CLAUSE_END, "split"),
    "ling.translation_qa._WORD": _target("ling.translation_qa._WORD", translation_qa._WORD, "findall"),
}


def _literal_runs(pattern: str) -> list[str]:
    """Runs of literal characters in a pattern's parse tree (what it must see to get further)."""
    try:
        import re._parser as sre_parse
    except ImportError:  # Python < 3.11
        import sre_parse  # type: ignore[no-redef]
    try:
        tree = sre_parse.parse(pattern)
    except (re.error, TypeError, ValueError, OverflowError):
        return []
    runs: list[str] = []

    def walk(items) -> None:
        current = ""
        for op, value in items:
            if op is sre_parse.LITERAL:
                current += chr(value)
                continue
            if current:
                runs.append(current)
                current = ""
            if op in (sre_parse.SUBPATTERN,):
                walk(value[-1])
            elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT):
                walk(value[2])
            elif op is sre_parse.BRANCH:
                for branch in value[1]:
                    walk(branch)
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT, sre_parse.ATOMIC_GROUP):
                walk(value[-1] if op is not sre_parse.ATOMIC_GROUP else value)
        if current:
            runs.append(current)

    walk(tree)
    return [run for run in runs if run.isprintable() or run.strip()]


def generated_inputs(target: Target, rng: random.Random) -> list[tuple[str, str, str]]:
    """``(prefix, pump, suffix)`` triples: literal runs, pairs of runs (joined by a letter or not), every single
    character of the pattern and the class representatives, random strings of them; prefixes that reach deeper
    states (the runs in order)."""
    runs = list(dict.fromkeys([*_literal_runs(target.pattern), *target.tokens]))
    alphabet = sorted({*REPRESENTATIVES, *(c for c in target.pattern if c.isprintable())})
    pumps = set(runs) | set(alphabet)
    pumps.update(f"{a}x{b}" for a in runs for b in runs)
    pumps.update(f"{a}{b}" for a in runs for b in runs)
    for _ in range(24):
        pumps.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))))
    prefixes = ["", "1", "a"] + ["".join(runs[:k]) for k in range(1, len(runs) + 1)]
    triples = [(prefix, pump, suffix) for pump in sorted(pumps) for prefix in prefixes for suffix in SUFFIXES]
    rng.shuffle(triples)
    return triples[:MAX_TRIPLES]


def _seconds(apply: Callable[[str], object], value: str, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        apply(value)
        best = min(best, time.perf_counter() - started)
    return best


def _value(triple: tuple[str, str, str], size: int) -> str:
    prefix, pump, suffix = triple
    return prefix + pump * max(1, (size - len(prefix) - len(suffix)) // len(pump)) + suffix


def worst_case(target: Target, triples: list[tuple[str, str, str]]) -> tuple[float, int, tuple[str, str, str]]:
    """The input that used most of its budget: ``(share of the budget, size, triple)``. Every triple doubles up to
    :data:`SCREEN_SIZE`; the :data:`FINALISTS` that used most of their budget go on to the largest size. An input
    over budget (measured three times) ends the search at once."""
    target.apply("warm up: first calls compile patterns and load word lists")
    worst = (0.0, 0, triples[0])
    at_screen: list[tuple[float, tuple[str, str, str]]] = []
    for stage, candidates in (("screen", triples), ("final", None)):
        if candidates is None:
            candidates = [triple for _share, triple in sorted(at_screen, reverse=True)[:FINALISTS]]
        sizes = [size for size in SIZES if (size <= SCREEN_SIZE) == (stage == "screen")]
        for triple in candidates:
            for size in sizes:
                value = _value(triple, size)
                share = _seconds(target.apply, value) / (budget(size) * target.passes)
                if share > 1:
                    share = _seconds(target.apply, value, repeats=3) / (budget(size) * target.passes)
                if share > worst[0]:
                    worst = (share, size, triple)
                if share > 1:
                    return worst
                if size == SCREEN_SIZE:
                    at_screen.append((share, triple))
    return worst


@pytest.mark.parametrize("name", sorted(AUDITED))
def test_every_pattern_runs_in_linear_time_on_generated_adversarial_inputs(name: str):
    target = AUDITED[name]
    triples = generated_inputs(target, random.Random(f"{SEED}-{name}"))
    share, size, (prefix, pump, suffix) = worst_case(target, triples)
    assert share <= 1, (
        f"{name} took {share:.1f}x its linear budget ({budget(size) * target.passes * 1000:.1f} ms) "
        f"on {size:,} characters: "
        f"prefix {prefix!r}, pump {pump!r} repeated, suffix {suffix!r}"
    )


def test_the_harness_catches_the_old_svg_sniffer():
    """The old nested repeat over comments (kept here as a specimen) fails the property within milliseconds."""
    old = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype svg[^>]*>\s*)?<svg[\s>]", re.I | re.S)
    target = _target("old _SVG_SNIFF", old, "match")
    started = time.perf_counter()
    share, size, (_prefix, pump, _suffix) = worst_case(target, generated_inputs(target, random.Random(SEED)))
    assert share > 1 and size <= 512, (share, size, pump)
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    ("pattern", "method"),
    [
        (r"^\s*(\d+)(?:\.\d*)?\s*(?:px)?\s*$", "match"),  # the old width/height pattern
        (r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", "search"),  # the old header charset pattern
        (r"[\s,]*(\S+)(?:(?<=,)|([^,]*))", "findall"),  # the old srcset candidate pattern
    ],
)
def test_the_harness_catches_the_old_quadratic_patterns(pattern: str, method: str):
    target = _target("old", re.compile(pattern, re.IGNORECASE), method)
    share, _size, _triple = worst_case(target, generated_inputs(target, random.Random(SEED)))
    assert share > 1


def _compiled_patterns() -> set[str]:
    """``<module>.<NAME>`` of every module-level ``NAME = re.compile(...)`` / ``regex.compile(...)``, and
    ``<module>.<function>`` of every function that compiles one, in the package."""
    root = Path(mella_assets.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if "compile(" not in source:
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        tree = ast.parse(source)
        owners: dict[int, ast.AST] = {}  # node id -> the top-level assignment or function it is in
        for statement in tree.body:
            for node in ast.walk(statement):
                owners[id(node)] = statement
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "compile" or getattr(node.func.value, "id", None) not in {"re", "regex"}:
                continue
            owner = owners.get(id(node))
            if isinstance(owner, ast.FunctionDef):
                found.add(f"{module}.{owner.name}")
            elif isinstance(owner, ast.Assign):
                found.update(f"{module}.{t.id}" for t in owner.targets if isinstance(t, ast.Name))
            else:
                found.add(f"{module}:{node.lineno}")
    return found


def test_every_compiled_pattern_of_the_package_is_audited():
    audited = set(AUDITED) | {"know.filters._has_run"}
    missing = _compiled_patterns() - audited
    assert not missing, f"patterns not in tests/test_regex_linear.py AUDITED: {sorted(missing)}"
