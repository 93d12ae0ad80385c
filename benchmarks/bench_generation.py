"""D_ling generation throughput: captions/s and translations/s with the tiny models on CPU at batch sizes 1, 8
and 32, each batched row against batch size 1 measured in the same run (medians of 5 runs).

The models are the tiny random ones the tests and demo use, loaded through the same ``from_pretrained`` code as
real checkpoints; greedy decoding with a fixed number of new tokens (EOS disabled) so every batch size does the
same work per item. What the ratio shows is how much per-call overhead batching amortises on this CPU; real-size
figures need a GPU (`python -m benchmarks.gpu_check`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from benchmarks.harness import Measurement, Row, compare, measure
from mella_assets.demo.corpus import demo_texts
from mella_assets.demo.tiny_models import build_tiny_models
from mella_assets.lib.vlm import VisionLanguageModel, load_caption_prompt
from mella_assets.ling.translation import Translator

BATCH_SIZES = (1, 8, 32)
NEW_TOKENS = 24


def _fixed_length(model) -> None:
    # No early stop: every row generates NEW_TOKENS tokens, so throughput compares equal work.
    model.generation_config.eos_token_id = None
    model.generation_config.min_new_tokens = NEW_TOKENS


def run(quick: bool = False) -> list[Row]:
    import torch

    # One intra-op thread: on this shared 2-core machine torch's default threads oversubscribe the cores and
    # made every figure 5-10x slower and far noisier (measured with load average ≈ 7).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> list[Row]:
    items = 16 if quick else 32
    runs = 5
    texts = demo_texts(["cs", "vi"])
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_models(Path(tmp), texts)
        vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner), device="cpu")
        translator = Translator.from_pretrained(str(tiny.translator), device="cpu")
    _fixed_length(vlm.model)
    _fixed_length(translator.model)
    prompt = load_caption_prompt().text
    images = [Image.new("RGB", (64 + i, 48 + i), (7 * i % 256, 90, 160)) for i in range(items)]
    sentences = [f"A red tram number {i} crosses the old stone bridge in the morning." for i in range(items)]

    def captions(batch_size: int) -> Measurement:
        def once() -> int:
            return len(vlm.generate(images, [prompt] * items, max_new_tokens=NEW_TOKENS, batch_size=batch_size))

        return measure(once, runs=runs, warmup=1)

    def translations(batch_size: int) -> Measurement:
        def once() -> int:
            return len(translator.translate(sentences, "ces_Latn", max_new_tokens=NEW_TOKENS, batch_size=batch_size))

        return measure(once, runs=runs, warmup=1)

    rows: list[Row] = []
    for stage, unit, timed in (("captions", "captions/s", captions), ("translations", "translations/s", translations)):
        single = timed(1)
        for batch_size in BATCH_SIZES[1:]:
            rows.append(
                compare(
                    f"{stage} tiny CPU batch={batch_size}",
                    unit,
                    timed(batch_size),
                    single,
                    "same model, batch=1",
                    items=items,
                    new_tokens=NEW_TOKENS,
                )
            )
    return rows
