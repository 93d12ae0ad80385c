"""Batched, deterministic machine translation with NLLB-style seq2seq checkpoints (and the tiny test model).

transformers 5.x has no translation pipeline: the target language is forced as the first decoder token
(``forced_bos_token_id``), the NLLB convention. NLLB degrades on long inputs, so a caption is translated sentence
by sentence (a sentence longer than ``max_sentence_chars`` is cut at clause breaks, then at spaces) and the
pieces are joined again with a space; sentences of all captions are batched together, sorted by length.
:func:`translate_cached` wraps any translator backend (this one or the OpenAI-compatible one) with the
content-keyed cache.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from mella_assets.lib.cache import (
    CachedRun,
    JsonCache,
    PerItemCalls,
    batches,
    content_key,
    model_fingerprint,
)
from mella_assets.lib.progress import SILENT, ProgressLog
from mella_assets.lib.vlm import resolve_device, resolve_dtype
from mella_assets.lib.watchdog import deadline_passed

# A sentence ends at . ! ? (or the Arabic question mark) followed by whitespace. Thai has no sentence
# punctuation, so a Thai text stays one "sentence".
_SENTENCE_END = re.compile(r"(?<=[.!?؟])\s+")
# Where an overlong sentence may be cut: after a clause mark followed by whitespace.
_CLAUSE_END = re.compile(r"(?<=[,;:،])\s+")
# About 100 English words: well inside what NLLB-200 translates reliably (it was trained on sentences).
DEFAULT_MAX_SENTENCE_CHARS = 600
# Captions handed to the backend per call by translate_cached, in batches: each call's results are cached.
CHUNK_BATCHES = 8
# Reasons translate_cached gives a caption it has no translation for (a remote backend adds its own, e.g.
# http_error_400): translating it raised, for the caption alone; the stage deadline came first (checked between
# chunks: finished translations are kept, these are retried on the next run). QA reasons: translation_qa.REASONS.
REASONS = ("translation_failed", "stage_deadline")

_SERBIAN_CYRILLIC_TO_LATIN = {
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Ђ": "Đ", "Е": "E", "Ж": "Ž", "З": "Z", "И": "I",
    "Ј": "J", "К": "K", "Л": "L", "Љ": "Lj", "М": "M", "Н": "N", "Њ": "Nj", "О": "O", "П": "P", "Р": "R",
    "С": "S", "Т": "T", "Ћ": "Ć", "У": "U", "Ф": "F", "Х": "H", "Ц": "C", "Ч": "Č", "Џ": "Dž", "Ш": "Š",
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "ђ": "đ", "е": "e", "ж": "ž", "з": "z", "и": "i",
    "ј": "j", "к": "k", "л": "l", "љ": "lj", "м": "m", "н": "n", "њ": "nj", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "ћ": "ć", "у": "u", "ф": "f", "х": "h", "ц": "c", "ч": "č", "џ": "dž", "ш": "š",
}  # fmt: skip
_DIGRAPH_UPPER = {"Љ": "LJ", "Њ": "NJ", "Џ": "DŽ"}


def split_sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by whitespace; empty pieces are dropped."""
    return [piece for piece in _SENTENCE_END.split(text.strip()) if piece]


def _cut(piece: str, max_chars: int, pattern: re.Pattern[str] | None) -> list[str]:
    """Greedily pack the parts of ``piece`` split by ``pattern`` (None: by whitespace) into chunks."""
    parts = pattern.split(piece) if pattern is not None else piece.split()
    chunks: list[str] = []
    for part in parts:
        if chunks and len(chunks[-1]) + 1 + len(part) <= max_chars:
            chunks[-1] = f"{chunks[-1]} {part}"
        else:
            chunks.append(part)
    return chunks


def split_for_translation(text: str, max_chars: int = DEFAULT_MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of ``text``; a sentence over ``max_chars`` is cut after commas / semicolons / colons, and a
    clause still over it at spaces (a single word longer than ``max_chars`` stays whole). Joining the pieces
    with one space gives back the text with its whitespace runs collapsed."""
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _cut(sentence, max_chars, _CLAUSE_END):
            pieces.extend([clause] if len(clause) <= max_chars else _cut(clause, max_chars, None))
    return pieces


def nllb_language_name(code: str) -> str:
    """English name of an NLLB code of the language registry (``ces_Latn`` -> Czech); the code if unknown."""
    from mella_assets.languages import REGISTRY

    if code == "eng_Latn":
        return "English"
    names = {language.nllb_code: language.name for language in REGISTRY.values()}
    return names.get(code, code)


def transliterate_serbian_to_latin(text: str) -> str:
    """Serbian Cyrillic -> Latin (gajica); Љ Њ Џ become Lj Nj Dž, or LJ NJ DŽ inside all-capital words."""
    out: list[str] = []
    for index, char in enumerate(text):
        if char in _DIGRAPH_UPPER:
            following = text[index + 1] if index + 1 < len(text) else ""
            preceding = text[index - 1] if index > 0 else ""
            all_caps = following.isupper() or (not following.isalpha() and preceding.isupper())
            out.append(_DIGRAPH_UPPER[char] if all_caps else _SERBIAN_CYRILLIC_TO_LATIN[char])
        else:
            out.append(_SERBIAN_CYRILLIC_TO_LATIN.get(char, char))
    return "".join(out)


class Translator:
    """A seq2seq translation model and its tokenizer."""

    def __init__(self, model, tokenizer, model_id: str, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self._model_id = model_id
        self._version: str | None = None

    @classmethod
    def from_pretrained(cls, model_id: str, device: str = "auto", dtype: str = "auto") -> Translator:
        """Load tokenizer and model (``auto``: CUDA + bf16 when present, else CPU fp32)."""
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        device = resolve_device(device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_id))
        model = AutoModelForSeq2SeqLM.from_pretrained(str(model_id), dtype=resolve_dtype(dtype, device))
        model.to(device).eval()
        return cls(model, tokenizer, str(model_id), device)

    @property
    def model_id(self) -> str:
        """The id or path the model was loaded from."""
        return self._model_id

    @property
    def version(self) -> str:
        """Model id and, for a local folder, a content fingerprint: part of cache keys."""
        if self._version is None:
            self._version = model_fingerprint(self._model_id)
        return self._version

    def target_token_id(self, target_code: str) -> int:
        """The vocabulary id of a language code token (the forced first decoder token); ValueError if absent."""
        target_id = self.tokenizer.convert_tokens_to_ids(target_code)
        if target_id is None or target_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{target_code!r} is not a language token of {self.model_id}")
        return int(target_id)

    def translate(
        self,
        texts: Sequence[str],
        target_code: str,
        source_code: str = "eng_Latn",
        max_new_tokens: int = 64,
        batch_size: int = 16,
        max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS,
    ) -> list[str]:
        """Translate each text piece by piece (see :func:`split_for_translation`; greedy) and rejoin the
        translated pieces with a space, in input order."""
        pieces: list[tuple[int, str]] = [
            (index, piece)
            for index, text in enumerate(texts)
            for piece in split_for_translation(text, max_sentence_chars)
        ]
        target_id = self.target_token_id(target_code)
        encoded = self._encode([piece for _, piece in pieces], source_code)
        # Longest first, so each batch holds sentences of similar length and little padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        translated: list[str] = [""] * len(encoded)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for position, text in zip(
                chunk, self._generate([encoded[i] for i in chunk], target_id, max_new_tokens), strict=True
            ):
                translated[position] = text
        joined: list[list[str]] = [[] for _ in texts]
        for (index, _), text in zip(pieces, translated, strict=True):
            joined[index].append(text)
        return [" ".join(part for part in parts if part) for parts in joined]

    def _encode(self, sentences: list[str], source_code: str) -> list[list[int]]:
        limit = min(getattr(self.model.config, "max_position_embeddings", 1024), self.tokenizer.model_max_length)
        if hasattr(self.tokenizer, "src_lang"):  # NLLB / M2M100 tokenizers add the code and </s> themselves
            self.tokenizer.src_lang = source_code
            return [self.tokenizer(sentence, truncation=True, max_length=limit)["input_ids"] for sentence in sentences]
        # A plain tokenizer (the tiny model's): build the NLLB layout <source code> tokens </s> by hand.
        source_id = self.tokenizer.convert_tokens_to_ids(source_code)
        eos_id = self.tokenizer.eos_token_id
        return [
            [source_id, *self.tokenizer.encode(sentence, add_special_tokens=False)[: limit - 2], eos_id]
            for sentence in sentences
        ]

    def generate_ids(self, batch: list[list[int]], target_id: int, max_new_tokens: int):
        """Greedy decoder output ids (decoder start, forced language code, tokens...) for encoded inputs."""
        import torch

        self.tokenizer.padding_side = "right"
        inputs = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return self.model.generate(
                **inputs, forced_bos_token_id=target_id, max_new_tokens=max_new_tokens, do_sample=False
            ).cpu()

    def _generate(self, batch: list[list[int]], target_id: int, max_new_tokens: int) -> list[str]:
        output = self.generate_ids(batch, target_id, max_new_tokens)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]


def translation_key(text: str, model_version: str, target_code: str, params: dict[str, Any]) -> str:
    """Cache key of one translation: source text, model, target language code and generation params."""
    return content_key("translation", text, model_version, target_code, params)


def translate_cached(
    sources: Sequence[str],
    target_code: str,
    cache: JsonCache,
    model_version: str,
    load_backend: Callable[[], Any],
    params: dict[str, Any],
    batch_size: int = 16,
    progress: ProgressLog = SILENT,
) -> tuple[list[str | None], list[str | None], CachedRun]:
    """Translations of ``sources`` (None where there is none) with the reason where there is none (the backend
    refused it, translating it raised, or the stage deadline came first: :data:`REASONS`), and run counters.
    Cached values are reused; the backend is loaded only when something is missing and is called for chunks of
    ``CHUNK_BATCHES`` batches of what is missing (it sorts each chunk by length itself); the stage deadline is
    checked between chunks. ``params`` are passed to ``translate`` and go into every key; ``batch_size`` does not
    (batched output equals unbatched output). ``progress`` hears of every finished chunk."""
    keys = [translation_key(text, model_version, target_code, params) for text in sources]
    run = CachedRun(items=len(sources))
    reasons: list[str | None] = [None] * len(sources)
    hits_before, misses_before = cache.hits, cache.misses
    calls = PerItemCalls()
    chunk_size = max(batch_size * CHUNK_BATCHES, 1)
    reporter = progress.loop("translations", len(keys), unit="captions")

    def compute(missing: list[int]):
        reporter.start(already_done=len(keys) - len(missing))  # the rest is cached
        backend = load_backend()

        def translate(items: list[int]) -> list[Any]:
            return backend.translate(
                [sources[i] for i in items], target_code=target_code, batch_size=batch_size, **params
            )

        # Chunks of several batches: the backend sorts each chunk by length, and a killed run keeps every
        # finished chunk in the cache.
        for number, chunk in enumerate(batches(missing, chunk_size)):
            if deadline_passed():
                for i in missing[number * chunk_size :]:  # retried, and only they, on the next run
                    reasons[i] = "stage_deadline"
                break
            started = time.perf_counter()
            outputs = calls(translate, chunk, "translation_failed")
            run.model_seconds += time.perf_counter() - started
            for i, output in zip(chunk, outputs, strict=True):
                if isinstance(output, str):
                    yield i, {"text": output}
                else:  # an ItemFailure, or an ItemError of a remote backend: recorded, not cached, retried next run
                    reasons[i] = output.reason
            reporter.advance(len(chunk))
        calls.check_model()

    values, _ = cache.get_or_compute(keys, compute, stop_at_deadline=True)
    reporter.finish()
    run.cache_hits, run.cache_misses = cache.hits - hits_before, cache.misses - misses_before
    # A caption that occurs twice shares its first occurrence's translation or reason.
    first = {key: i for i, key in reversed(list(enumerate(keys)))}
    reasons = [reasons[first[key]] for key in keys]
    for reason in reasons:
        if reason is not None:
            run.failed[reason] = run.failed.get(reason, 0) + 1
    return [value["text"] if value else None for value in values], reasons, run
