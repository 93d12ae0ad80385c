"""A real model whose stage deadline passes after a given number of calls, as if those calls had been slow: a
deadline that hits mid-stage at a known point, without sleeping on a shared, loaded machine."""

from __future__ import annotations

from typing import Any

from mella_assets.lib.watchdog import current_deadline


class DeadlineAfterCalls:
    """Forwards ``generate`` / ``translate`` to ``model``; once ``calls`` of them have returned, the running stage's
    deadline has passed. ``seen`` counts the items each call was given."""

    def __init__(self, model: Any, calls: int) -> None:
        self.model = model
        self.calls = calls
        self.seen: list[int] = []

    def _after(self, items: int) -> None:
        self.seen.append(items)
        if len(self.seen) == self.calls:
            deadline = current_deadline()
            assert deadline is not None, "run this inside a stage (stage_deadline or an asset)"
            deadline.seconds = 0.0

    def generate(self, images: list, prompts: list, **kwargs: Any) -> list:
        outputs = self.model.generate(images, prompts, **kwargs)
        self._after(len(images))
        return outputs

    def translate(self, texts: list, **kwargs: Any) -> list:
        outputs = self.model.translate(texts, **kwargs)
        self._after(len(texts))
        return outputs


class Counting:
    """Forwards to ``model`` and records how many items each call was given (to see what a rerun asks for)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seen: list[int] = []

    def generate(self, images: list, prompts: list, **kwargs: Any) -> list:
        self.seen.append(len(images))
        return self.model.generate(images, prompts, **kwargs)

    def translate(self, texts: list, **kwargs: Any) -> list:
        self.seen.append(len(texts))
        return self.model.translate(texts, **kwargs)


class RaisingOn:
    """Forwards to ``model`` but raises ``error`` whenever a call includes an item ``bad(item)`` holds for — the way
    a processor fails on one odd image or a tokenizer on one odd text, whatever else shares its batch."""

    def __init__(self, model: Any, bad: Any, error: Exception) -> None:
        self.model = model
        self.bad = bad
        self.error = error
        self.seen: list[int] = []

    def generate(self, images: list, prompts: list, **kwargs: Any) -> list:
        self.seen.append(len(images))
        if any(self.bad(image) for image in images):
            raise self.error
        return self.model.generate(images, prompts, **kwargs)

    def translate(self, texts: list, **kwargs: Any) -> list:
        self.seen.append(len(texts))
        if any(self.bad(text) for text in texts):
            raise self.error
        return self.model.translate(texts, **kwargs)
