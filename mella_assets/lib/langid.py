"""Language identification of short texts (alt texts, captions): exact priors, a fast detector, lingua for the rest.

Why not a detector restricted to the configured languages: a closed set labels text in *related* languages
(Slovak, Polish -> Czech; Ukrainian, Bulgarian, Macedonian -> Russian or Serbian; Chinese -> anything) as a
target (measured in benchmarks/bench_langid.py). Web crawls contain those languages. Why not lingua with all 75
languages on every text: ~1.5 ms per Latin-script text on one core (lingua scores every Latin language). So
:meth:`LanguageIdentifier.check` decides in stages, cheapest first:

1. Exact script rules. No letter -> ``language_uncertain``; under ``MIN_SCRIPT_SHARE`` of the letters in the
   language's scripts -> ``wrong_language``. Hangul -> ko, Thai script -> th, Arabic script -> ar unless the text
   has letters only Persian / Urdu use. Cyrillic: ђ or ћ (no other language) -> sr; letters Serbian lacks
   (щ ъ ь ы э ю я й ё ї є ґ і ѓ ќ ѕ ў) rule sr out; letters Russian lacks (ђ ћ ј љ њ џ ї є ґ і ѓ ќ ѕ ў) rule ru
   out. ј љ њ џ are shared with Macedonian, so they are not taken as proof of Serbian.
2. CLD2 (``pycld2``, ~5 µs a text, 80+ languages). When it is reliable and names one language for at least
   ``FAST_MIN_PERCENT`` of a text of at least ``FAST_MIN_LETTERS`` letters, that language is the answer, except:
   a target language accepts this way only in its ``Language.langid_fast_accept_scripts`` (not Serbian Cyrillic:
   CLD2 reads Macedonian as Serbian), and CLD2 rejects nothing on a page that declares the target (lingua and its
   close-call rule decide there).
3. lingua with the languages that matter for this text: every registry language with its labels and relatives,
   English, and CLD2's guesses (``CRAWL_LANGUAGES`` + guesses; models loaded once and shared). A text that CLD2
   cannot place therefore still meets the languages it most resembles, not only the targets. A text shorter
   than ``FAST_MIN_LETTERS`` meets all of lingua's 75 languages (CLD2's guesses are noise there, and the closed-
   set trap is worst on short texts). Labels in ``language.labels`` count as the
   language (confidences summed). Page prior for close calls (Czech vs Slovak is the weakest pair): when another
   language wins but the target's confidence is at least ``close_ratio`` (0.5) times its confidence, the text is
   accepted if the page declares the target (``page_lang``), else rejected as ``language_uncertain``.
4. Serbian in Latin script: lingua reads it as Croatian or Bosnian (its Serbian model is Cyrillic-only), so hr and
   bs count as Serbian and the words decide (:mod:`mella_assets.lib.serbo_croatian`): a preposition that
   Serbo-Croatian lacks (Slovene / West Slavic ``v``, ``z``, ``w``) -> ``wrong_language``; ekavian forms and
   Serbian words -> sr; ijekavian forms, Croatian or Bosnian words -> ``wrong_language``; a text whose words do not tell
   (the three standards share most sentences) is settled by the page (``sr`` accepts, ``hr`` / ``bs`` reject),
   else by ``accept_undecided_serbian`` (default: accept, because such a text *is* correct Serbian).

On the labelled set (``benchmarks/bench_langid.py``) stages 1-3 keep exactly what all-languages lingua with the
same rules keeps for every target but Serbian; for Serbian, stage 4 and CLD2 change 18 of 588 decisions, 17 of
them to the right answer. ``confidence`` is lingua's confidence, or CLD2's share of the text for a stage-2
decision, rounded to 6 digits.

The ``langdetect`` backend (seeded, deterministic) is the baseline: its scores go through the same rules (stage 1,
the close-call rule and stage 4). It has no Serbian at all, so for sr the labels hr and bs count as for lingua,
and mk and sl are accepted only when the page declares Serbian (langdetect reads Serbian Cyrillic as mk).

:meth:`LanguageIdentifier.detect` (the single most likely language) uses lingua with all languages after stage 1.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from mella_assets.languages import REGISTRY, Language
from mella_assets.lib.page_language import language_tag_prefix
from mella_assets.lib.serbo_croatian import has_non_serbo_croatian_words, serbian_evidence
from mella_assets.lib.text import SCRIPTS, normalize_text, script_of

BACKENDS = ("lingua", "langdetect")

# A close call: the target's confidence is at least this share of the best other language's. Then the page's
# declared language settles it (measured on 2-4 word Czech / Slovak alts: with the page prior 20/20 Czech
# accepted at 0.35 absolute gap but 9/14 Slovak too; at ratio 0.5, 19/20 Czech and 4/14 Slovak).
DEFAULT_CLOSE_RATIO = 0.5
# Share of the letters that must be in one of the language's scripts; below it the text is another language
# (lower than 0.5 so that a Korean or Thai alt with a Latin brand name still counts: a Hangul syllable or a
# Thai word carries more than one Latin letter does).
MIN_SCRIPT_SHARE = 0.4
# CLD2 settles a text alone only when it is reliable, gives one language at least this share of the text...
FAST_MIN_PERCENT = 90
# ...and the text has at least this many letters: on two- or three-word texts (where Czech and Slovak, or
# Serbian and Croatian, are often the same string) lingua's longer n-grams and the close-call rule decide.
FAST_MIN_LETTERS = 16
# Always among lingua's candidates: the foreign language alt texts are most often written in.
ALWAYS_CANDIDATES = ("en",)

_PERSIAN_URDU_LETTERS = frozenset("پچژگکیٹڈڑںےۀھ")
_SERBIAN_ONLY_CYRILLIC = frozenset("ђћ")
_NOT_SERBIAN_CYRILLIC = frozenset("щъьыэюяйёїєґіѓќѕў")
_NOT_RUSSIAN_CYRILLIC = frozenset("ђћјљњџїєґіѓќѕў")
# langdetect has no Serbian model; these are what it says for Serbian text.
_LANGDETECT_SERBIAN_STANDINS = frozenset({"mk", "sl"})
# lingua's candidates besides CLD2's guesses: every registry language, its labels and its relatives, and English
# (the languages a crawl for the targets meets most; lingua skips those not written in the text's script).
CRAWL_LANGUAGES = frozenset(
    code
    for language in REGISTRY.values()
    for code in (*language.labels, *language.langid_relatives, *ALWAYS_CANDIDATES)
)
# CLD2 codes that are not ISO 639-1 (or are regional variants) -> ISO 639-1.
_CLD2_CODES = {"zh-Hant": "zh", "iw": "he", "jw": "jv", "no": "nb", "sr-ME": "sr"}

UNKNOWN = "unknown"
CONFIDENCE_DIGITS = 6


@dataclass(frozen=True)
class Detection:
    """The most likely language of a text: ISO 639-1 code (or ``"unknown"``) and a confidence in [0, 1]."""

    label: str
    confidence: float

    def __post_init__(self) -> None:
        _round_confidence(self)


def _round_confidence(result: Detection | LanguageCheck) -> None:
    # lingua's parallel and serial calls differ in the last bits of a float; rounding keeps reruns row-identical.
    object.__setattr__(result, "confidence", round(float(result.confidence), CONFIDENCE_DIGITS))


@dataclass(frozen=True)
class LanguageCheck:
    """Whether a text is in the expected language.

    ``reason`` is None when ``ok``, else ``"wrong_language"`` or ``"language_uncertain"``.
    """

    ok: bool
    label: str
    confidence: float
    reason: str | None

    def __post_init__(self) -> None:
        _round_confidence(self)


class _Text:
    """One normalised text with what every stage reads from it (CLD2's answer computed on first use)."""

    __slots__ = ("_cld2", "letter_count", "letters", "script", "shares", "text")

    def __init__(self, raw: str) -> None:
        self.text = normalize_text(raw)
        scripts = Counter(map(_script_of_letter, filter(str.isalpha, self.text)))
        self.letter_count = scripts.total()
        # The shares script_of gives, counted in C (script_of loops in Python).
        self.shares = {script: scripts[script] / self.letter_count if self.letter_count else 0.0 for script in SCRIPTS}
        self.script = max(self.shares, key=self.shares.__getitem__)  # the most letters are in it
        self.letters = frozenset(self.text.casefold())
        self._cld2: tuple[bool, tuple[tuple[str, int], ...]] | None = None

    @property
    def cld2(self) -> tuple[bool, tuple[tuple[str, int], ...]]:
        """(reliable, ((ISO 639-1 code, percent of the text), ...)), best first; best-effort guesses when not
        reliable."""
        if self._cld2 is None:
            self._cld2 = _cld2_guesses(self.text)
        return self._cld2

    def share_of(self, language: Language) -> float:
        return sum(self.shares.get(script, 0.0) for script in language.scripts)


@cache
def _script_of_letter(letter: str) -> str:
    shares = script_of(letter)
    return max(shares, key=shares.__getitem__)


def _cld2_guesses(text: str) -> tuple[bool, tuple[tuple[str, int], ...]]:
    import pycld2

    try:
        reliable, _, details = pycld2.detect(text)
        if not reliable:
            _, _, details = pycld2.detect(text, bestEffort=True)
    except pycld2.error:  # rejects some byte sequences; then lingua decides
        return False, ()
    guesses = tuple((_CLD2_CODES.get(code, code), percent) for _, code, percent, _ in details if code != "un")
    return bool(reliable and guesses), guesses


_detectors: dict[Any, Any] = {}
_detectors_lock = threading.Lock()
# Detectors load every model of their languages when built (the pipeline: many texts, loaded on all cores at
# once). `mella langid` turns this off with `load_models_on_demand()`: a line then loads only the models of the
# languages lingua's character rules leave for it, so the first line does not wait for every model.
_preload_models = True


def load_models_on_demand() -> None:
    """Detectors built from now on load a language's models when a text first needs them."""
    global _preload_models
    _preload_models = False


def _build(builder: Any, low_accuracy: bool = False) -> Any:
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return (builder.with_preloaded_language_models() if _preload_models else builder).build()


def _lingua_detector(low_accuracy: bool = False) -> Any:
    """The process-wide all-languages lingua detector (built once, ~2.3-12 s, ~1.2 GB), for :meth:`detect`."""
    key = ("lingua", None, low_accuracy)
    with _detectors_lock:
        if key not in _detectors:
            from lingua import LanguageDetectorBuilder

            # Preloading costs a few seconds once; lazy loading measured ~10 s spread over the first few hundred
            # texts because models load one by one while texts wait.
            _detectors[key] = _build(LanguageDetectorBuilder.from_all_languages(), low_accuracy)
        return _detectors[key]


def _lingua_languages(codes: frozenset[str]) -> frozenset[Any]:
    """lingua's languages for the ISO 639-1 codes it knows."""
    from lingua import IsoCode639_1
    from lingua import Language as LinguaLanguage

    out = set()
    for code in codes:
        iso = getattr(IsoCode639_1, code.upper(), None)
        if iso is not None:
            out.add(LinguaLanguage.from_iso_code_639_1(iso))
    return frozenset(out)


def _lingua_detector_for(codes: frozenset[str] | None, low_accuracy: bool = False) -> Any:
    """A lingua detector for these languages, or for all of them when ``codes`` is None (cached per set and mode;
    lingua shares the models between detectors, so a new set costs only the models not loaded yet)."""
    if codes is None:
        return _lingua_detector(low_accuracy)
    key = ("lingua", codes, low_accuracy)
    detector = _detectors.get(key)
    if detector is not None:
        return detector
    with _detectors_lock:
        if key not in _detectors:
            from lingua import LanguageDetectorBuilder

            languages = _lingua_languages(codes)
            _detectors[key] = _build(LanguageDetectorBuilder.from_languages(*languages), low_accuracy)
        return _detectors[key]


def _langdetect_factory() -> Any:
    """The process-wide langdetect factory with its profiles loaded, seeded for deterministic answers."""
    with _detectors_lock:
        if "langdetect" not in _detectors:
            from langdetect import DetectorFactory
            from langdetect.detector_factory import PROFILES_DIRECTORY

            DetectorFactory.seed = 0
            factory = DetectorFactory()
            factory.load_profile(PROFILES_DIRECTORY)
            factory.seed = 0
            _detectors["langdetect"] = factory
        return _detectors["langdetect"]


def _lingua_scores(results: Sequence[Any]) -> dict[str, float]:
    return {c.language.iso_code_639_1.name.lower(): c.value for c in results if c.value > 0}


class LanguageIdentifier:
    """Identifies the language of short texts and checks them against an expected :class:`Language`.

    ``backend`` is ``"lingua"`` (default: the cascade of the module docstring) or ``"langdetect"``; ``targets``
    are the configured languages (script priors fire only for them; default: every registry language).
    ``accept_undecided_serbian``: whether a Latin-script text that reads as Serbian, Croatian or Bosnian alike,
    on a page that declares none of them, is kept for Serbian. ``low_accuracy``: lingua in its low-accuracy mode
    (trigram models only: they load in about a second where the full models take 5-30 s, but short texts are
    read worse); never in the pipeline, only for `mella langid`'s answers given while the full models load.
    Detectors are built on first use and shared by every identifier in the process.
    """

    def __init__(
        self,
        backend: str = "lingua",
        targets: Sequence[Language] | None = None,
        close_ratio: float = DEFAULT_CLOSE_RATIO,
        accept_undecided_serbian: bool = True,
        low_accuracy: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown language-ID backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        self.targets: tuple[Language, ...] = tuple(REGISTRY.values() if targets is None else targets)
        self.target_codes = frozenset(language.code for language in self.targets)
        self.close_ratio = close_ratio
        self.accept_undecided_serbian = accept_undecided_serbian
        self.low_accuracy = low_accuracy

    # -- stage 1: exact script rules ----------------------------------------------------------------------

    def _script_prior(self, text: _Text) -> Detection | None:
        """A label settled by the script alone, or None when a detector must decide."""
        shares, letters = text.shares, text.letters
        if "ko" in self.target_codes and shares["Hang"] >= MIN_SCRIPT_SHARE:
            return Detection("ko", 1.0)
        if "th" in self.target_codes and shares["Thai"] >= MIN_SCRIPT_SHARE:
            return Detection("th", 1.0)
        arabic = shares["Arab"] >= MIN_SCRIPT_SHARE
        if "ar" in self.target_codes and arabic and not letters & _PERSIAN_URDU_LETTERS:
            return Detection("ar", 1.0)
        if (
            "sr" in self.target_codes
            and shares["Cyrl"] >= MIN_SCRIPT_SHARE
            and letters & _SERBIAN_ONLY_CYRILLIC
            and not letters & _NOT_SERBIAN_CYRILLIC
        ):
            return Detection("sr", 1.0)
        return None

    @staticmethod
    def _letters_rule_out(text: _Text, language: Language) -> bool:
        """Whether the text has a letter the language's alphabet lacks (sr and ru in Cyrillic)."""
        if language.code == "sr":
            return text.shares["Cyrl"] >= MIN_SCRIPT_SHARE and bool(text.letters & _NOT_SERBIAN_CYRILLIC)
        if language.code == "ru":
            return bool(text.letters & _NOT_RUSSIAN_CYRILLIC)
        return False

    def _exact(self, text: _Text, language: Language) -> LanguageCheck | None:
        """Stage 1: a decision from the letters alone, or None."""
        if not any(text.shares.values()):
            return LanguageCheck(False, UNKNOWN, 0.0, "language_uncertain")
        prior = self._script_prior(text)
        if prior is not None:
            if prior.label in language.labels:
                return LanguageCheck(True, prior.label, prior.confidence, None)
            return LanguageCheck(False, prior.label, prior.confidence, "wrong_language")
        if text.share_of(language) < MIN_SCRIPT_SHARE or self._letters_rule_out(text, language):
            label, confidence = self._cheap_label(text)
            return LanguageCheck(False, label, confidence, "wrong_language")
        return None

    def _cheap_label(self, text: _Text) -> tuple[str, float]:
        """The label reported with a rejection decided without lingua: CLD2's best guess (langdetect's top
        label for that backend)."""
        if self.backend == "langdetect":
            top = self._top(self._langdetect_scores(text.text))
            return top.label, top.confidence
        _, guesses = text.cld2
        return (guesses[0][0], guesses[0][1] / 100) if guesses else (UNKNOWN, 0.0)

    # -- stage 2: CLD2 ------------------------------------------------------------------------------------

    def _fast(self, text: _Text, language: Language, page_lang: str | None) -> LanguageCheck | None:
        """Stage 2: CLD2's decision when it is sure and allowed to decide, else None."""
        if text.letter_count < FAST_MIN_LETTERS:
            return None
        reliable, guesses = text.cld2
        if not reliable or guesses[0][1] < FAST_MIN_PERCENT:
            return None
        code, percent = guesses[0]
        if code in language.labels:
            scripts = language.langid_fast_accept_scripts
            if scripts is not None and text.script not in scripts:
                return None
            return self._serbian_words(text, language, page_lang, LanguageCheck(True, code, percent / 100, None))
        if page_lang in language.labels:
            # Another language on a page that declares the target: lingua and its close-call rule decide (CLD2
            # reliably read a Croatian alt as Indonesian in the benchmark set).
            return None
        return LanguageCheck(False, code, percent / 100, "wrong_language")

    # -- stage 3: lingua with the languages that matter -----------------------------------------------------

    @staticmethod
    def _candidates(text: _Text, language: Language) -> frozenset[str] | None:
        """lingua's languages for this text; None (all of them) for a short text, where CLD2's guesses are noise
        and a restricted set would turn into the closed-set trap."""
        if text.letter_count < FAST_MIN_LETTERS:
            return None
        _, guesses = text.cld2
        # The target's own labels and relatives too: it may be a language from MELLA_LANGUAGES_FILE.
        return CRAWL_LANGUAGES.union(language.labels, language.langid_relatives, (code for code, _ in guesses))

    # -- langdetect scores --------------------------------------------------------------------------------

    def _langdetect_scores(self, text: str) -> dict[str, float]:
        from langdetect.lang_detect_exception import LangDetectException

        detector = _langdetect_factory().create()
        detector.append(text)
        try:
            probabilities = detector.get_probabilities()
        except LangDetectException:  # no usable features (e.g. digits only)
            return {}
        scores: dict[str, float] = {}
        for p in probabilities:
            label = p.lang.split("-")[0].lower()  # zh-cn, zh-tw -> zh
            scores[label] = scores.get(label, 0.0) + p.prob
        return scores

    # -- public API ---------------------------------------------------------------------------------------

    def detect(self, text: str) -> Detection:
        """The most likely language of ``text`` (script priors first, then all-languages lingua or langdetect;
        a Latin text read as hr / bs whose words are Serbian is sr)."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[Detection]:
        """:meth:`detect` for many texts, batched through the backend."""
        analysed = [_Text(text) for text in texts]
        out: list[Detection | None] = []
        pending: list[int] = []
        for i, text in enumerate(analysed):
            if not any(text.shares.values()):
                out.append(Detection(UNKNOWN, 0.0))
                continue
            prior = self._script_prior(text)
            out.append(prior)
            if prior is None:
                pending.append(i)
        if pending:
            if self.backend == "lingua":
                detector = _lingua_detector(self.low_accuracy)
                batch = [analysed[i].text for i in pending]
                # The parallel call runs on all cores in Rust; it is not worth its overhead for one text.
                if len(batch) > 1:
                    results = detector.compute_language_confidence_values_in_parallel(batch)
                else:
                    results = [detector.compute_language_confidence_values(batch[0])]
                all_scores = [_lingua_scores(values) for values in results]
            else:
                all_scores = [self._langdetect_scores(analysed[i].text) for i in pending]
            for i, scores in zip(pending, all_scores, strict=True):
                top = self._top(scores)
                if top.label in ("hr", "bs") and "sr" in self.target_codes and serbian_evidence(analysed[i].text) > 0:
                    top = Detection("sr", top.confidence)
                out[i] = top
        return [detection or Detection(UNKNOWN, 0.0) for detection in out]

    @staticmethod
    def _top(scores: dict[str, float]) -> Detection:
        if not scores:
            return Detection(UNKNOWN, 0.0)
        label = max(scores, key=scores.__getitem__)
        return Detection(label, float(scores[label]))

    def check(self, text: str, language: Language, page_lang: str | None = None) -> LanguageCheck:
        """Whether ``text`` is in ``language``.

        ``page_lang`` (the page's declared language, e.g. ``"cs"`` or ``"cs-CZ"``) settles close calls; see the
        module docstring for the rules.
        """
        analysed = _Text(text)
        page = _lang_prefix(page_lang)
        decided = self._exact(analysed, language)
        if decided is None and self.backend == "lingua":
            decided = self._fast(analysed, language, page)
        if decided is None:
            decided = self._check_analysed([analysed], [language], [page])[0]
        return decided

    def check_many(
        self,
        texts: Sequence[str],
        language: Language,
        page_langs: Sequence[str | None] | None = None,
    ) -> list[LanguageCheck]:
        """:meth:`check` for many texts of one expected language; lingua runs once per set of candidate
        languages, in parallel when a set has several texts."""
        if page_langs is None:
            page_langs = [None] * len(texts)
        analysed = [_Text(text) for text in texts]
        pages = [_lang_prefix(page_lang) for page_lang in page_langs]
        return self._check_analysed(analysed, [language] * len(analysed), pages)

    def _settle(self, text: _Text, language: Language, page: str | None) -> LanguageCheck | None:
        """The decision when it needs no lingua model (stages 1-2, or langdetect's whole decision), else None."""
        decided = self._exact(text, language)
        if decided is None and self.backend == "lingua":
            decided = self._fast(text, language, page)
        if decided is None and self.backend == "langdetect":
            decided = self._decide(text, self._langdetect_scores(text.text), language, page)
        return decided

    def _check_analysed(
        self, texts: Sequence[_Text], languages: Sequence[Language], pages: Sequence[str | None]
    ) -> list[LanguageCheck]:
        out: list[LanguageCheck | None] = []
        pending: dict[frozenset[str] | None, list[int]] = {}
        for i, (text, language, page) in enumerate(zip(texts, languages, pages, strict=True)):
            decided = self._settle(text, language, page)
            out.append(decided)
            if decided is None:
                pending.setdefault(self._candidates(text, language), []).append(i)
        for candidates, indices in pending.items():
            detector = _lingua_detector_for(candidates, self.low_accuracy)
            batch = [texts[i].text for i in indices]
            if len(batch) > 1:
                results = detector.compute_language_confidence_values_in_parallel(batch)
            else:
                results = [detector.compute_language_confidence_values(batch[0])]
            for i, values in zip(indices, results, strict=True):
                out[i] = self._decide(texts[i], _lingua_scores(values), languages[i], pages[i])
        return [check for check in out if check is not None]

    def _decide(
        self, text: _Text, scores: dict[str, float], language: Language, page_lang: str | None
    ) -> LanguageCheck:
        """Stages 3 and 4 on a detector's label scores."""
        top = self._top(scores)
        if top.label == UNKNOWN:
            return LanguageCheck(False, UNKNOWN, 0.0, "language_uncertain")
        labels = set(language.labels)
        page_confirms = page_lang is not None and page_lang in labels
        target_scores = {label: score for label, score in scores.items() if label in labels}
        other_scores = {label: score for label, score in scores.items() if label not in labels}
        if self.backend == "langdetect" and language.code == "sr":
            # No Serbian model: what langdetect says for Serbian counts only with the page's word for it
            # (Serbian-only letters ђ ћ were settled by the script prior already).
            standins = {k: v for k, v in other_scores.items() if k in _LANGDETECT_SERBIAN_STANDINS}
            if page_confirms:
                target_scores.update(standins)
            for label in standins:
                other_scores.pop(label)
            if standins and not page_confirms and not target_scores:
                return LanguageCheck(False, top.label, top.confidence, "language_uncertain")
        target_confidence = sum(target_scores.values())
        best_other = max(other_scores.values(), default=0.0)
        # hr and bs both stand for (Latin) Serbian, so the labels of one language are summed before comparing.
        if target_confidence > 0 and target_confidence >= best_other:
            label = max(target_scores, key=target_scores.__getitem__)
            return self._serbian_words(text, language, page_lang, LanguageCheck(True, label, target_confidence, None))
        if target_confidence > 0 and target_confidence >= self.close_ratio * best_other:
            if page_confirms:
                accepted = LanguageCheck(True, language.code, target_confidence, None)
                return self._serbian_words(text, language, page_lang, accepted)
            return LanguageCheck(False, top.label, top.confidence, "language_uncertain")
        return LanguageCheck(False, top.label, top.confidence, "wrong_language")

    def _serbian_words(
        self, text: _Text, language: Language, page_lang: str | None, accepted: LanguageCheck
    ) -> LanguageCheck:
        """Stage 4: Serbian vs Croatian / Bosnian in a Latin text the detector accepted for Serbian."""
        if language.code != "sr" or text.shares["Latn"] < MIN_SCRIPT_SHARE:
            return accepted
        if has_non_serbo_croatian_words(text.text):
            return LanguageCheck(False, accepted.label, accepted.confidence, "wrong_language")
        evidence = serbian_evidence(text.text)
        other = accepted.label if accepted.label != "sr" else "hr"
        if evidence < 0 or (evidence == 0 and page_lang in ("hr", "bs")):
            return LanguageCheck(False, other, accepted.confidence, "wrong_language")
        if evidence > 0 or page_lang == "sr" or self.accept_undecided_serbian:
            return LanguageCheck(True, "sr", accepted.confidence, None)
        return LanguageCheck(False, other, accepted.confidence, "language_uncertain")


def _lang_prefix(value: str | None) -> str | None:
    """``"cs-CZ"`` / ``"sr_Latn"`` / ``"CS"`` -> ``"cs"``; None, blank or a tag naming no language -> None."""
    return language_tag_prefix(value)


def identify_many(
    identifier: LanguageIdentifier, texts: Sequence[str], page_langs: Sequence[str | None] | None = None
) -> list[Detection]:
    """The configured target language each text is accepted as (the pipeline's exact rules, best confidence
    first), or ``Detection("und", best confidence among the rejections)`` when no target accepts it."""
    return [detection for detection in _identify(identifier, texts, page_langs, lingua=True) if detection is not None]


def identify_without_lingua(
    identifier: LanguageIdentifier, texts: Sequence[str], page_langs: Sequence[str | None] | None = None
) -> list[Detection | None]:
    """:func:`identify_many`'s answer for each text that the script rules and CLD2 settle for every target (the
    same answer, with no lingua model loaded), None for a text that needs lingua."""
    return _identify(identifier, texts, page_langs, lingua=False)


def _identify(
    identifier: LanguageIdentifier,
    texts: Sequence[str],
    page_langs: Sequence[str | None] | None,
    lingua: bool,
) -> list[Detection | None]:
    page_langs = list(page_langs) if page_langs is not None else [None] * len(texts)
    analysed = [_Text(text) for text in texts]
    pages = [_lang_prefix(page_lang) for page_lang in page_langs]
    # Only targets written in the text's script can accept it; one check per (text, such target).
    pairs = [
        (i, language)
        for i, text in enumerate(analysed)
        for language in identifier.targets
        if text.share_of(language) >= MIN_SCRIPT_SHARE
    ]
    if lingua:
        checks: list[LanguageCheck | None] = list(
            identifier._check_analysed(
                [analysed[i] for i, _ in pairs], [language for _, language in pairs], [pages[i] for i, _ in pairs]
            )
        )
    else:
        checks = [identifier._settle(analysed[i], language, pages[i]) for i, language in pairs]
    unsettled = {i for (i, _), check in zip(pairs, checks, strict=True) if check is None}
    accepted: dict[int, list[tuple[float, str]]] = {}
    rejected: dict[int, float] = {}
    for (i, language), check in zip(pairs, checks, strict=True):
        if check is None:
            continue
        if check.ok:
            accepted.setdefault(i, []).append((check.confidence, language.code))
        else:
            rejected[i] = max(rejected.get(i, 0.0), check.confidence)
    out: list[Detection | None] = []
    for i in range(len(analysed)):
        if i in unsettled:
            out.append(None)
        elif i in accepted:
            confidence, code = max(accepted[i])
            out.append(Detection(code, min(1.0, confidence)))
        else:
            out.append(Detection("und", rejected.get(i, 0.0)))
    return out
