"""Batched, deterministic machine translation with NLLB-style seq2seq checkpoints (and the tiny test model).

transformers 5.x has no translation pipeline: the target language is forced as the first decoder token
(``forced_bos_token_id``), the NLLB convention.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mella_assets.lib.cache import model_fingerprint
from mella_assets.lib.vlm import resolve_device, resolve_dtype

# A sentence ends at . ! ? (or the Arabic question mark) followed by whitespace. Thai has no sentence
# punctuation, so a Thai text stays one "sentence".
_SENTENCE_END = re.compile(r"(?<=[.!?؟])\s+")

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

    def translate(
        self,
        texts: Sequence[str],
        target_code: str,
        source_code: str = "eng_Latn",
        max_new_tokens: int = 64,
        batch_size: int = 16,
    ) -> list[str]:
        """Translate each text sentence by sentence (greedy) and rejoin the sentences with a space."""
        sentences: list[tuple[int, str]] = [
            (index, sentence) for index, text in enumerate(texts) for sentence in split_sentences(text)
        ]
        target_id = self.tokenizer.convert_tokens_to_ids(target_code)
        if target_id is None or target_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{target_code!r} is not a language token of {self.model_id}")
        encoded = self._encode([sentence for _, sentence in sentences], source_code)
        # Longest first, so each batch holds sentences of similar length and little padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        translated: list[str] = [""] * len(encoded)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for position, text in zip(
                chunk, self._generate([encoded[i] for i in chunk], target_id, max_new_tokens), strict=True
            ):
                translated[position] = text
        pieces: list[list[str]] = [[] for _ in texts]
        for (index, _), text in zip(sentences, translated, strict=True):
            pieces[index].append(text)
        return [" ".join(piece for piece in parts if piece) for parts in pieces]

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

    def _generate(self, batch: list[list[int]], target_id: int, max_new_tokens: int) -> list[str]:
        import torch

        self.tokenizer.padding_side = "right"
        inputs = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, forced_bos_token_id=target_id, max_new_tokens=max_new_tokens, do_sample=False
            )
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
