"""Language identification of short texts (alt texts, captions) with exact script priors.

Why not a detector restricted to the configured languages: a closed set labels text in *related* languages
(Slovak, Polish -> Czech; Ukrainian, Bulgarian, Macedonian -> Russian or Serbian; Chinese -> anything) as a
target (MEASURED.md, "Text"). Web crawls contain those languages, so the ``lingua`` backend loads *all* of
lingua's 75 languages and adds exact Unicode priors:

- Hangul -> ko, Thai script -> th, Arabic script -> ar unless the text has letters only Persian / Urdu use
  (then the detector decides between ar, fa, ur...).
- Cyrillic: ђ or ћ (used by no other language) -> sr; letters Serbian lacks
  (щ ъ ь ы э ю я й ё ї є ґ і ѓ ќ ѕ ў) rule sr out; letters Russian lacks (ђ ћ ј љ њ џ ї є ґ і ѓ ќ ѕ ў) rule
  ru out. ј љ њ џ are shared with Macedonian, so they are not taken as proof of Serbian here.
- Labels in ``language.labels`` count as the language (their confidences are summed): for sr that is hr and
  bs, because lingua's Serbian model is Cyrillic-only and reads Latin-script Serbian as Croatian or Bosnian.
- Page prior for close calls (Czech vs Slovak is the weakest pair): when the detector's top label is another
  language but the target's confidence is at least ``close_ratio`` (0.5) times its confidence, the text is
  accepted if the page declares the target language (``page_lang``), else rejected as ``language_uncertain``.

The ``langdetect`` backend (seeded, deterministic) is the alternative; it has no Serbian at all, so for sr the
labels hr and bs count as for lingua, and mk and sl are accepted only when the page declares Serbian or the
text has the Serbian-only letters ђ ћ (ј љ њ џ are Macedonian too; langdetect reads Serbian Cyrillic as mk).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mella_assets.languages import REGISTRY, Language
from mella_assets.lib.text import normalize_text, script_of

BACKENDS = ("lingua", "langdetect")

# A close call: the target's confidence is at least this share of the best other language's. Then the page's
# declared language settles it (measured on 2-4 word Czech / Slovak alts: with the page prior 20/20 Czech
# accepted at 0.35 absolute gap but 9/14 Slovak too; at ratio 0.5, 19/20 Czech and 4/14 Slovak).
DEFAULT_CLOSE_RATIO = 0.5
# Share of the letters that must be in one of the language's scripts; below it the text is another language
# (lower than 0.5 so that a Korean or Thai alt with a Latin brand name still counts: a Hangul syllable or a
# Thai word carries more than one Latin letter does).
MIN_SCRIPT_SHARE = 0.4

_PERSIAN_URDU_LETTERS = frozenset("پچژگکیٹڈڑںےۀھ")
_SERBIAN_ONLY_CYRILLIC = frozenset("ђћ")
_NOT_SERBIAN_CYRILLIC = frozenset("щъьыэюяйёїєґіѓќѕў")
_NOT_RUSSIAN_CYRILLIC = frozenset("ђћјљњџїєґіѓќѕў")
# langdetect has no Serbian model; these are what it says for Serbian text (DESIGN §4).
_LANGDETECT_SERBIAN_STANDINS = frozenset({"mk", "sl"})

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


_detectors: dict[str, Any] = {}
_detectors_lock = threading.Lock()


def _lingua_detector() -> Any:
    """The process-wide all-languages lingua detector (built once, ~2.3 s, ~1.2 GB)."""
    with _detectors_lock:
        if "lingua" not in _detectors:
            from lingua import LanguageDetectorBuilder

            # Preloading costs ~2.3 s once; lazy loading measured ~10 s spread over the first few hundred
            # texts because models load one by one while texts wait.
            _detectors["lingua"] = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
        return _detectors["lingua"]


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


class LanguageIdentifier:
    """Identifies the language of short texts and checks them against an expected :class:`Language`.

    ``backend`` is ``"lingua"`` (default) or ``"langdetect"``; ``targets`` are the configured languages
    (script priors fire only for them; default: every registry language). Detectors are built on first use and
    shared by every identifier in the process.
    """

    def __init__(
        self,
        backend: str = "lingua",
        targets: Sequence[Language] | None = None,
        close_ratio: float = DEFAULT_CLOSE_RATIO,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown language-ID backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        self.targets: tuple[Language, ...] = tuple(REGISTRY.values() if targets is None else targets)
        self.target_codes = frozenset(language.code for language in self.targets)
        self.close_ratio = close_ratio

    # -- raw detector scores ------------------------------------------------------------------------------

    def _scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Label -> confidence per text from the backend, best first (empty when it cannot tell)."""
        if self.backend == "lingua":
            detector = _lingua_detector()
            # The parallel call runs on all cores in Rust; it is not worth its overhead for one text.
            if len(texts) > 1:
                results = detector.compute_language_confidence_values_in_parallel(list(texts))
            else:
                results = [detector.compute_language_confidence_values(text) for text in texts]
            return [
                {c.language.iso_code_639_1.name.lower(): c.value for c in values if c.value > 0} for values in results
            ]
        return [self._langdetect_scores(text) for text in texts]

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

    # -- exact priors -------------------------------------------------------------------------------------

    def _script_prior(self, text: str, shares: dict[str, float]) -> Detection | None:
        """A label settled by the script alone, or None when the detector must decide."""
        letters = set(text.casefold())
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

    # -- public API ---------------------------------------------------------------------------------------

    def detect(self, text: str) -> Detection:
        """The most likely language of ``text`` (script priors first, then the backend)."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[Detection]:
        """:meth:`detect` for many texts, batched through the backend."""
        return [self._top(scores) for scores in self._analyse_many(texts)[1]]

    def _analyse_many(self, texts: Sequence[str]) -> tuple[list[str], list[dict[str, float]]]:
        """Normalised texts and their label scores, with exact script priors applied."""
        normalised = [normalize_text(text) for text in texts]
        out: list[dict[str, float] | None] = []
        pending: list[int] = []
        for i, text in enumerate(normalised):
            shares = script_of(text)
            if not any(shares.values()):
                out.append({})
                continue
            prior = self._script_prior(text, shares)
            if prior is not None:
                out.append({prior.label: prior.confidence})
            else:
                out.append(None)
                pending.append(i)
        if pending:
            for i, scores in zip(pending, self._scores_many([normalised[i] for i in pending]), strict=True):
                out[i] = scores
        return normalised, [scores or {} for scores in out]

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
        return self.check_many([text], language, [page_lang])[0]

    def check_many(
        self,
        texts: Sequence[str],
        language: Language,
        page_langs: Sequence[str | None] | None = None,
    ) -> list[LanguageCheck]:
        """:meth:`check` for many texts of one expected language, batched through the backend."""
        if page_langs is None:
            page_langs = [None] * len(texts)
        normalised, all_scores = self._analyse_many(texts)
        return [
            self._decide(text, scores, language, _lang_prefix(page_lang))
            for text, scores, page_lang in zip(normalised, all_scores, page_langs, strict=True)
        ]

    def _decide(self, text: str, scores: dict[str, float], language: Language, page_lang: str | None) -> LanguageCheck:
        top = self._top(scores)
        if top.label == UNKNOWN:
            return LanguageCheck(False, UNKNOWN, 0.0, "language_uncertain")
        shares = script_of(text)
        if sum(shares[s] for s in language.scripts if s in shares) < MIN_SCRIPT_SHARE:
            return LanguageCheck(False, top.label, top.confidence, "wrong_language")
        letters = set(text.casefold())
        cyrillic = shares["Cyrl"] >= MIN_SCRIPT_SHARE
        not_serbian = language.code == "sr" and cyrillic and letters & _NOT_SERBIAN_CYRILLIC
        not_russian = language.code == "ru" and letters & _NOT_RUSSIAN_CYRILLIC
        if not_serbian or not_russian:
            return LanguageCheck(False, top.label, top.confidence, "wrong_language")
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
            return LanguageCheck(True, label, float(target_confidence), None)
        if target_confidence > 0 and target_confidence >= self.close_ratio * best_other:
            if page_confirms:
                return LanguageCheck(True, language.code, float(target_confidence), None)
            return LanguageCheck(False, top.label, top.confidence, "language_uncertain")
        return LanguageCheck(False, top.label, top.confidence, "wrong_language")


def _lang_prefix(value: str | None) -> str | None:
    """``"cs-CZ"`` / ``"sr_Latn"`` / ``"CS"`` -> ``"cs"``; None or blank -> None."""
    if not value:
        return None
    prefix = value.strip().replace("_", "-").split("-")[0].lower()
    return prefix or None


def identify_many(
    identifier: LanguageIdentifier, texts: Sequence[str], page_langs: Sequence[str | None] | None = None
) -> list[Detection]:
    """The configured target language each text is accepted as (the pipeline's exact rules, best confidence
    first), or ``Detection("und", top confidence)`` when no target accepts it. One detector pass for all."""
    page_langs = list(page_langs) if page_langs is not None else [None] * len(texts)
    normalised, all_scores = identifier._analyse_many(texts)
    out: list[Detection] = []
    for text, scores, page_lang in zip(normalised, all_scores, page_langs, strict=True):
        accepted = [
            (check.confidence, language.code)
            for language in identifier.targets
            for check in [identifier._decide(text, scores, language, _lang_prefix(page_lang))]
            if check.ok
        ]
        if accepted:
            confidence, code = max(accepted)
            out.append(Detection(code, min(1.0, confidence)))
        else:
            out.append(Detection("und", identifier._top(scores).confidence))
    return out
