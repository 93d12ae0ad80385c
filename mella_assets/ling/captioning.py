"""Caption the chosen images with any captioner backend, through the content-keyed cache.

A caption's cache key is (image sha256, model fingerprint, prompt version, generation params) — no language —
so a language partition that shares images with another reuses its captions, a rerun computes nothing, and a
run killed midway resumes with only the unfinished images (each caption is stored as soon as its batch is
done). Images that cannot be read, items a remote server refuses, items whose generation raises and the images
not reached by the stage deadline become rejects with a reason (:data:`REASONS`, or the server's); none is
cached, so the next run tries them again and only them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
from PIL import Image

from mella_assets.lib.cache import CachedRun, ItemFailure, JsonCache, PerItemCalls, batches, content_key
from mella_assets.lib.progress import SILENT, ProgressLog
from mella_assets.lib.vlm import DEFAULT_MAX_PIXELS, CaptionPrompt
from mella_assets.lib.watchdog import current_deadline, deadline_passed
from mella_assets.tables import CAPTION_REJECTS, MLLM_CAPTIONS

CAPTIONS_SCHEMA = dict(MLLM_CAPTIONS.columns)
CAPTION_REJECTS_SCHEMA = dict(CAPTION_REJECTS.columns)
# Our reasons in caption_rejects (a remote backend adds its own, e.g. http_error_400): the stored image does not
# decode; generating the caption raised, for the image alone; the stage deadline came first (checked between
# batches: the finished captions are written, these are retried on the next run).
REASONS = ("image_unreadable", "caption_failed", "stage_deadline")


@dataclass(frozen=True)
class CaptionParams:
    """Generation parameters that change a caption (all part of its cache key). Decoding is always greedy."""

    max_new_tokens: int = 48
    max_pixels: int = DEFAULT_MAX_PIXELS

    def key(self) -> dict[str, Any]:
        return {**asdict(self), "decoding": "greedy"}


def caption_key(image_sha256: str, model_version: str, prompt_version: str, params: CaptionParams) -> str:
    """Cache key of one caption. Deliberately without the language: captions are English and per image."""
    return content_key("caption", image_sha256, model_version, prompt_version, params.key())


@dataclass
class CaptionRun(CachedRun):
    """Cache counters plus token counts: of every output row, and of the ones generated in this run."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    new_tokens_generated: int = 0

    def metadata(self, unit: str = "images") -> dict[str, Any]:
        data = super().metadata(unit)
        data.update(
            prompt_tokens=self.prompt_tokens,
            new_tokens=self.new_tokens,
            new_tokens_generated=self.new_tokens_generated,
            generated_tokens_per_second=(
                round(self.new_tokens_generated / self.model_seconds, 1) if self.model_seconds else None
            ),
        )
        return data


def caption_images(
    chosen: pl.DataFrame,
    read_image: Callable[[str], Image.Image],
    load_backend: Callable[[], Any],
    model_version: str,
    prompt: CaptionPrompt,
    cache: JsonCache,
    params: CaptionParams,
    batch_size: int,
    language: str,
    model_id: str,
    progress: ProgressLog = SILENT,
) -> tuple[pl.DataFrame, pl.DataFrame, CaptionRun]:
    """Captions of ``chosen`` (``image_sha256``, ``image_key``, ``domain``) as a ``CAPTIONS_SCHEMA`` frame, the
    rejects (``CAPTION_REJECTS_SCHEMA``) and the run counters. ``load_backend()`` is called only when some
    caption is missing from the cache; its ``generate(images, prompts, max_new_tokens=, batch_size=,
    max_pixels=)`` returns a ``Generation`` (or an ``ItemError``) per image. Between batches the stage deadline
    is checked: past it, the images not captioned yet are ``stage_deadline`` rejects and the rest is returned.
    ``progress`` hears of every finished batch (``mllm_captions: done/total images``)."""
    shas, image_keys = chosen["image_sha256"].to_list(), chosen["image_key"].to_list()
    keys = [caption_key(sha, model_version, prompt.version, params) for sha in shas]
    run = CaptionRun(items=len(keys))
    rejects: dict[int, tuple[str, str]] = {}
    hits_before, misses_before = cache.hits, cache.misses
    deadline = current_deadline()
    unfinished_detail = f"not captioned by the stage deadline ({deadline.setting})" if deadline else ""
    calls = PerItemCalls()
    reporter = progress.loop("mllm_captions", len(keys), unit="images")

    def compute(missing: list[int]):
        reporter.start(already_done=len(keys) - len(missing))  # the rest is cached
        backend = None
        for number, batch in enumerate(batches(missing, batch_size)):
            if deadline_passed():
                # This batch and every later one: retried (and only they) on the next run.
                rejects.update({i: ("stage_deadline", unfinished_detail) for i in missing[number * batch_size :]})
                return
            pictures, readable = {}, []
            for i in batch:
                try:
                    pictures[i] = read_image(image_keys[i])
                    readable.append(i)
                except (OSError, ValueError, Image.DecompressionBombError) as error:
                    rejects[i] = ("image_unreadable", f"{type(error).__name__}: {error}"[:200])
            if not readable:
                reporter.advance(len(batch))
                continue
            backend = backend or load_backend()

            def generate(items: list[int], backend: Any = backend, pictures: dict = pictures) -> list[Any]:
                return backend.generate(
                    [pictures[i] for i in items],
                    [prompt.text] * len(items),
                    max_new_tokens=params.max_new_tokens,
                    batch_size=len(items),
                    max_pixels=params.max_pixels,
                )

            started = time.perf_counter()
            outputs = calls(generate, readable, "caption_failed")
            run.model_seconds += time.perf_counter() - started
            for i, output in zip(readable, outputs, strict=True):
                if isinstance(output, ItemFailure) or hasattr(output, "reason"):  # or an ItemError of a server
                    rejects[i] = (output.reason, output.detail)
                    continue
                run.new_tokens_generated += output.new_tokens
                yield i, {"text": output.text, "prompt_tokens": output.prompt_tokens, "new_tokens": output.new_tokens}
            reporter.advance(len(batch))
        calls.check_model()

    values, _ = cache.get_or_compute(keys, compute, stop_at_deadline=True)
    reporter.finish()
    run.cache_hits, run.cache_misses = cache.hits - hits_before, cache.misses - misses_before
    # An image listed twice shares its first listing's caption or reject.
    first = {key: i for i, key in reversed(list(enumerate(keys)))}
    rejects.update({i: rejects[first[key]] for i, key in enumerate(keys) if first[key] in rejects})
    for reason, _ in rejects.values():
        run.failed[reason] = run.failed.get(reason, 0) + 1
    rows = [
        (
            language,
            sha,
            key,
            domain,
            model_id,
            model_version,
            prompt.version,
            v["text"],
            v["prompt_tokens"],
            v["new_tokens"],
        )
        for sha, key, domain, v in zip(shas, image_keys, chosen["domain"].to_list(), values, strict=True)
        if v is not None
    ]
    frame = pl.DataFrame(rows, schema=CAPTIONS_SCHEMA, orient="row")
    run.prompt_tokens = int(frame["prompt_tokens"].sum() or 0)
    run.new_tokens = int(frame["new_tokens"].sum() or 0)
    reject_frame = pl.DataFrame(
        [(language, shas[i], image_keys[i], reason, detail) for i, (reason, detail) in sorted(rejects.items())],
        schema=CAPTION_REJECTS_SCHEMA,
        orient="row",
    )
    return frame, reject_frame, run
