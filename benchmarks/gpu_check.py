"""One prepared GPU check: SFT tokens/s and MFU, caption images/s and translation sentences/s with realistic-size
random-weight models, through the project's own tokenizer, processor, captioner and translator code.

    HF_HUB_OFFLINE=1 python -m benchmarks.gpu_check            # on the GPU machine (≈ 3-5 minutes on an H100)
    HF_HUB_OFFLINE=1 python -m benchmarks.gpu_check --smoke    # tiny sizes on whatever device, < 1 minute on CPU

Models (random weights, bf16 on CUDA, nothing downloaded):

- a LLaVA-architecture VLM: CLIP ViT-L/14 at 336 px (24 layers, 1024 wide, 576 image tokens) + a Llama text
  model of TinyLlama-1.1B shape (22 layers, 2048 wide, GQA 32/4 heads, 32k vocabulary): ≈ 1.4 B parameters;
- an NLLB-600M-shape translator (M2M100: 12 + 12 layers, 1024 wide, 256k vocabulary).

The tokenizer is the project's byte-level BPE (``mella_assets.demo.tiny_models``), trained here on the demo
texts; the processor is the project's LLaVA processor at 336 px. Model vocabularies keep their real sizes (the
tokenizer uses the first few thousand ids), so the LM head costs what it costs in the real model.

1. SFT: a plain full fine-tuning loop (bf16 weights, fused AdamW), batches of processor-built chat examples
   (image + prompt + answer, assistant-only loss), ``--sft-steps`` timed steps after two warm-up steps.
   tokens/s counts text positions (image tokens included); MFU = model FLOPs/s (6 × matmul parameters × the
   tokens through them, plus attention) / the GPU's dense bf16 peak (``--peak-tflops`` or known from its name).
2. Captions: ``VisionLanguageModel.generate`` with 64 new tokens per image (no early stop), batch 1 vs 32.
3. Translations: ``Translator.translate`` of English sentences (≈ 40 tokens) to Czech with 48 new tokens
   (no early stop), batch 1 vs 128.

Prints one JSON object to stdout and writes it to ``$OUT/gpu.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

# Dense bf16 peak (TFLOP/s) by device name; others need --peak-tflops for an MFU.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))


@dataclass(frozen=True)
class Sizes:
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    text_vocab: int
    sft_batch: int
    sft_seq: int
    caption_tokens: int
    caption_batches: tuple[int, int]
    caption_items: tuple[int, int]
    mt_hidden: int
    mt_layers: int
    mt_heads: int
    mt_ffn: int
    mt_vocab: int
    mt_tokens: int
    mt_batches: tuple[int, int]
    mt_items: tuple[int, int]


REAL = Sizes(
    vision_hidden=1024, vision_layers=24, vision_heads=16, vision_ffn=4096, image_size=336, patch_size=14,
    text_hidden=2048, text_layers=22, text_heads=32, text_kv_heads=4, text_ffn=5632, text_vocab=32000,
    sft_batch=8, sft_seq=1024,
    caption_tokens=64, caption_batches=(1, 32), caption_items=(4, 64),
    mt_hidden=1024, mt_layers=12, mt_heads=16, mt_ffn=4096, mt_vocab=256206,
    mt_tokens=48, mt_batches=(1, 128), mt_items=(8, 256),
)  # fmt: skip
SMOKE = Sizes(
    vision_hidden=32, vision_layers=2, vision_heads=2, vision_ffn=64, image_size=32, patch_size=16,
    text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, text_ffn=128, text_vocab=4000,
    sft_batch=2, sft_seq=96,
    caption_tokens=8, caption_batches=(1, 4), caption_items=(2, 8),
    mt_hidden=64, mt_layers=2, mt_heads=4, mt_ffn=128, mt_vocab=4000,
    mt_tokens=8, mt_batches=(1, 8), mt_items=(2, 16),
)  # fmt: skip


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_tflops(torch, device: str, override: float | None) -> float | None:
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def build_tokenizer_and_processor(sizes: Sizes):
    """The project's BPE tokenizer (trained on the demo texts) and its LLaVA processor at ``image_size``."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from mella_assets.demo import tiny_models
    from mella_assets.demo.corpus import corpus_languages, demo_texts

    tokenizer = tiny_models._train_tokenizer(demo_texts(corpus_languages()))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": sizes.image_size}, crop_size={"height": sizes.image_size, "width": sizes.image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=sizes.patch_size,
        vision_feature_select_strategy="default",
        chat_template=tiny_models.CHAT_TEMPLATE,
        image_token=tiny_models.IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return tokenizer, processor


def _special_ids(tokenizer) -> dict[str, int]:
    return {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id}


def build_vlm(torch, sizes: Sizes, tokenizer, device: str, dtype):
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mella_assets.demo.tiny_models import IMAGE_TOKEN

    vision = CLIPVisionConfig(
        hidden_size=sizes.vision_hidden,
        intermediate_size=sizes.vision_ffn,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        projection_dim=sizes.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=max(sizes.text_vocab, len(tokenizer)),
        hidden_size=sizes.text_hidden,
        intermediate_size=sizes.text_ffn,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads,
        num_key_value_heads=sizes.text_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        **_special_ids(tokenizer),
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise on the device: a CPU init of 1.4 B parameters takes minutes
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    # Fixed-length generation: no end-of-sequence stop, so every batch size does the same work per item.
    model.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=sizes.caption_tokens,
        min_new_tokens=sizes.caption_tokens,
        eos_token_id=None,
        **_special_ids(tokenizer),
    )
    return model


def _matmul_flops_per_step(model, batch: int, text_tokens: int, image_tokens: int, sizes: Sizes) -> float:
    """Training FLOPs of one step: 6 × weight × tokens for every Linear (by tower), plus attention."""
    import torch

    per_token = {"vision": 0, "projector": 0, "text": 0}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            tower = "vision" if "vision_tower" in name else "projector" if "multi_modal_projector" in name else "text"
            per_token[tower] += module.in_features * module.out_features
    vision_positions = image_tokens + 1  # CLS
    flops = 6 * per_token["vision"] * batch * vision_positions
    flops += 6 * per_token["projector"] * batch * image_tokens
    flops += 6 * per_token["text"] * batch * text_tokens
    # attention scores and weighted sums: 12 × layers × width × sequence per token (forward + backward)
    flops += 12 * sizes.vision_layers * sizes.vision_hidden * vision_positions * batch * vision_positions
    flops += 12 * sizes.text_layers * sizes.text_hidden * text_tokens * batch * text_tokens
    return float(flops)


def sft_section(torch, model, processor, tokenizer, sizes: Sizes, device: str, steps: int, peak) -> dict:
    import numpy as np
    from PIL import Image

    from mella_assets.demo.corpus import demo_texts
    from mella_assets.lib.vlm import user_turn

    sentences = demo_texts(["cs"])
    answer = " ".join(sentences)  # ≈ 3,000 tokens: every sequence is cut at sft_seq
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (sizes.image_size, sizes.image_size, 3), dtype=np.uint8), "RGB")
        for _ in range(sizes.sft_batch)
    ]
    messages = [user_turn("Popište obrázek."), {"role": "assistant", "content": answer}]
    text = processor.apply_chat_template(messages, tokenize=False)
    inputs = processor(images=images, text=[text] * sizes.sft_batch, return_tensors="pt")
    input_ids = inputs["input_ids"][:, : sizes.sft_seq]
    image_tokens = int((input_ids[0] == model.config.image_token_id).sum())
    labels = input_ids.clone()
    labels[input_ids == model.config.image_token_id] = -100
    labels[:, : image_tokens + 8] = -100  # the user turn: assistant-only loss
    batch = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": inputs["pixel_values"].to(device, model.dtype),
        "labels": labels.to(device),
    }
    model.train()
    fused = {"fused": True} if device.startswith("cuda") else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, **fused)

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(2):
        step()
    _sync(torch, device)
    seconds, losses = [], []
    for _ in range(steps):
        started = time.perf_counter()
        losses.append(step())
        _sync(torch, device)
        seconds.append(time.perf_counter() - started)
    model.eval()
    optimizer.state.clear()  # free the Adam moments before generation
    tokens = sizes.sft_batch * input_ids.shape[1]
    median = sorted(seconds)[len(seconds) // 2]
    flops = _matmul_flops_per_step(model, sizes.sft_batch, input_ids.shape[1], image_tokens, sizes)
    result = {
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "batch": sizes.sft_batch,
        "sequence": int(input_ids.shape[1]),
        "image_tokens": image_tokens,
        "steps": steps,
        "step_seconds": [round(s, 4) for s in seconds],
        "tokens_per_s": round(tokens / median, 1),
        "model_tflops_per_s": round(flops / median / 1e12, 2),
        "mfu": round(flops / median / (peak * 1e12), 4) if peak else None,
        "peak_tflops_assumed": peak,
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }
    if device.startswith("cuda"):
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def caption_section(torch, model, processor, sizes: Sizes, device: str) -> dict:
    import numpy as np
    from PIL import Image

    from mella_assets.lib.vlm import VisionLanguageModel

    vlm = VisionLanguageModel(model, processor, "random-llava-clip-l-llama-1b", None, device)
    rng = np.random.default_rng(1)
    count = max(sizes.caption_items)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "RGB") for _ in range(count)]
    prompt = "Describe the image in detail: the objects, the setting, any visible text."
    vlm.generate(images[:2], [prompt] * 2, max_new_tokens=4, batch_size=2)  # warm-up (kernels, allocator)
    result = {"new_tokens": sizes.caption_tokens}
    for batch_size, items in zip(sizes.caption_batches, sizes.caption_items, strict=True):
        _sync(torch, device)
        started = time.perf_counter()
        out = vlm.generate(images[:items], [prompt] * items, max_new_tokens=sizes.caption_tokens, batch_size=batch_size)
        _sync(torch, device)
        seconds = time.perf_counter() - started
        assert all(g.new_tokens == sizes.caption_tokens for g in out), "generation stopped early"
        result[f"batch_{batch_size}"] = {
            "images": items,
            "seconds": round(seconds, 3),
            "images_per_s": round(items / seconds, 3),
        }
    low, high = (result[f"batch_{b}"]["images_per_s"] for b in sizes.caption_batches)
    result["speedup"] = round(high / low, 2)
    return result


def build_translator(torch, sizes: Sizes, tokenizer, device: str, dtype):
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(
        vocab_size=max(sizes.mt_vocab, len(tokenizer)),
        d_model=sizes.mt_hidden,
        encoder_layers=sizes.mt_layers,
        decoder_layers=sizes.mt_layers,
        encoder_attention_heads=sizes.mt_heads,
        decoder_attention_heads=sizes.mt_heads,
        encoder_ffn_dim=sizes.mt_ffn,
        decoder_ffn_dim=sizes.mt_ffn,
        max_position_embeddings=1024,
        scale_embedding=True,
        decoder_start_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **_special_ids(tokenizer),
    )
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = M2M100ForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=sizes.mt_tokens,
        min_new_tokens=sizes.mt_tokens,
        eos_token_id=None,
        decoder_start_token_id=tokenizer.eos_token_id,
        **_special_ids(tokenizer),
    )
    return model


def translation_section(torch, model, tokenizer, sizes: Sizes, device: str) -> dict:
    from mella_assets.demo.corpus import english_sentences
    from mella_assets.ling.translation import Translator

    translator = Translator(model, tokenizer, "random-nllb-600m-shape", device)
    english = english_sentences()
    count = max(sizes.mt_items)
    sentences = [english[i % len(english)] for i in range(count)]
    lengths = [len(tokenizer.encode(s, add_special_tokens=False)) for s in sentences]
    translator.translate(sentences[:2], "ces_Latn", max_new_tokens=4, batch_size=2)  # warm-up
    result = {"new_tokens": sizes.mt_tokens, "input_tokens_mean": round(sum(lengths) / len(lengths), 1)}
    for batch_size, items in zip(sizes.mt_batches, sizes.mt_items, strict=True):
        _sync(torch, device)
        started = time.perf_counter()
        translator.translate(sentences[:items], "ces_Latn", max_new_tokens=sizes.mt_tokens, batch_size=batch_size)
        _sync(torch, device)
        seconds = time.perf_counter() - started
        result[f"batch_{batch_size}"] = {
            "sentences": items,
            "seconds": round(seconds, 3),
            "sentences_per_s": round(items / seconds, 3),
        }
    low, high = (result[f"batch_{b}"]["sentences_per_s"] for b in sizes.mt_batches)
    result["speedup"] = round(high / low, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check of the script itself)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cpu")
    parser.add_argument("--sft-steps", type=int, default=5, help="timed SFT steps (after 2 warm-up steps)")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU, for the MFU")
    parser.add_argument("--only", choices=["sft", "caption", "translation"], action="append")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()

    import torch
    import transformers

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = SMOKE if args.smoke or not device.startswith("cuda") else REAL
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if not device.startswith("cuda"):
        torch.set_num_threads(min(4, os.cpu_count() or 1))
    sections = args.only or ["sft", "caption", "translation"]
    report: dict = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({platform.processor()})",
        "sizes": "smoke" if sizes is SMOKE else "real",
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    tokenizer, processor = build_tokenizer_and_processor(sizes)
    if "sft" in sections or "caption" in sections:
        timer = time.perf_counter()
        model = build_vlm(torch, sizes, tokenizer, device, dtype)
        report["vlm_build_seconds"] = round(time.perf_counter() - timer, 2)
        if "sft" in sections:
            peak = _peak_tflops(torch, device, args.peak_tflops)
            report["sft"] = sft_section(torch, model, processor, tokenizer, sizes, device, args.sft_steps, peak)
        if "caption" in sections:
            report["caption"] = caption_section(torch, model, processor, sizes, device)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if "translation" in sections:
        model = build_translator(torch, sizes, tokenizer, device, dtype)
        report["translation"] = translation_section(torch, model, tokenizer, sizes, device)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
