"""Captioning, SFT (LoRA and full) and evaluation on tiny random-weight models of real VLM families.

Each family (tests/support/tiny_families.py) is its real config, model, processor and PIL image processor classes at
tiny sizes, with a chat template shaped like the released one (no generation markers), saved and loaded back only
through AutoProcessor / AutoModelForImageTextToText. Families whose processor needs torchvision (Qwen2-VL,
Qwen2.5-VL, InternVL, SmolVLM) are skipped where it does not import; their model halves are still checked here."""

import math
import os
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import SAMPLE_TEXTS
from mella_assets.evaluation.scoring import METRICS, score_samples
from mella_assets.languages import REGISTRY
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.training.families import (
    language_model_prefix,
    linear_layers,
    lora_target_modules,
    prefix_lm_token_type_ids,
    projector_prefixes,
    vision_prefixes,
)
from mella_assets.training.sft import GENERATION_MARKER, IGNORE_INDEX, SFTConfig, encode_batch, read_examples, train_sft
from support.tiny_families import FAMILIES, build_family

PROMPT = "Describe the image."
# What ends an assistant turn in each family's template (labelled with the answer so the model learns to stop).
END_OF_TURN = {
    "llava": "",  # the released LLaVA 1.5 template ends the answer with a space only
    "llava_next": "</s>",
    "idefics3": "<end_of_utterance>",
    "gemma3": "<end_of_turn>",
    "mllama": "<|eot_id|>",
    "aya_vision": "<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
    "paligemma": "<eos>",
    "qwen2_vl": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "internvl": "<|im_end|>",
    "smolvlm": "<end_of_utterance>",
}
TORCHVISION_FAMILIES = [name for name, family in FAMILIES.items() if family.requires]


def family_params() -> list:
    return [pytest.param(name, id=name) for name in FAMILIES]


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory):
    """Build each family once per session, on first use (skipped where a required module does not import)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        missing = FAMILIES[name].missing()  # like importorskip, but a torchvision built for another torch
        if missing:  # fails to import with a RuntimeError, not an ImportError
            pytest.skip(f"{name} needs {', '.join(missing)}, which does not import here")
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(f"family-{name}") / "base")
        return built[name]

    return get


@pytest.fixture(scope="session")
def family_runs(family_models, train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """A short LoRA and a short full SFT run per family, once per session: {method: (result, progress logs)}."""
    runs: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in runs:
            base = family_models(name)
            runs[name] = {}
            for method in ("lora", "full"):
                logs: list[dict] = []
                config = SFTConfig(
                    base_model=str(base),
                    train_file=str(train_file),
                    output_dir=str(tmp_path_factory.mktemp(f"sft-{name}-{method}")),
                    method=method,
                    max_steps=4,
                    batch_size=2,
                    log_every=2,
                )
                runs[name][method] = (train_sft(config, log=logs.append), logs)
        return runs[name]

    return get


def images() -> list[Image.Image]:
    """Two small images of different sizes and aspect ratios (tiling processors cut them differently)."""
    return [Image.new("RGB", (48, 40), (200, 40, 30)), Image.new("RGB", (30, 60), (20, 160, 220))]


@pytest.mark.parametrize("name", family_params())
def test_the_family_loads_through_the_auto_classes_with_its_real_classes(name: str, family_models) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = family_models(name)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == FAMILIES[name].model_class
    assert type(processor).__module__.startswith(f"transformers.models.{model.config.model_type}")
    assert processor.chat_template and GENERATION_MARKER not in processor.chat_template
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # tiny: the whole module stays fast


@pytest.mark.parametrize("name", family_params())
def test_captioning_generates_one_text_per_image_with_sane_token_counts(name: str, family_models) -> None:
    vlm = VisionLanguageModel.from_pretrained(str(family_models(name)))
    prompts = [PROMPT, "What is in the picture?"]
    batch = vlm.generate(images(), prompts, max_new_tokens=6)
    assert len(batch) == 2 and all(isinstance(g.text, str) for g in batch)
    tokenizer = vlm.processor.tokenizer
    for generation, prompt in zip(batch, prompts, strict=True):
        # The prompt counts the chat template's tokens and the image's tokens on top of the prompt text.
        assert generation.prompt_tokens > len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 2
        assert 1 <= generation.new_tokens <= 6
    # Left padding is right: the first image alone gets the same answer as in the batch.
    alone = vlm.generate(images()[:1], prompts[:1], max_new_tokens=6)[0]
    assert (alone.text, alone.prompt_tokens) == (batch[0].text, batch[0].prompt_tokens)


@pytest.mark.parametrize("name", family_params())
def test_labels_are_the_answer_and_its_end_of_turn(name: str, family_models, train_file: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(family_models(name))
    examples = read_examples(train_file)[:2]  # images of different widths: unequal lengths, so padding
    batch = encode_batch(processor, examples)
    assert batch["attention_mask"].sum(dim=1).unique().numel() == 2
    for row, example in zip(batch["labels"], examples, strict=True):
        labelled = processor.tokenizer.decode(row[row != IGNORE_INDEX].tolist())
        assert labelled.strip() == example["answer"] + END_OF_TURN[name]
    assert not (batch["labels"] != IGNORE_INDEX)[batch["attention_mask"] == 0].any()


@pytest.mark.parametrize("name", family_params())
def test_the_answer_is_attended_causally(name: str, family_models, train_file: Path) -> None:
    """PaliGemma's prefix-LM mask must not cover the answer; families without such token types are unaffected."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(family_models(name))
    batch = encode_batch(processor, read_examples(train_file)[:2])
    if type(processor).__name__ == "PaliGemmaProcessor":
        assert batch["token_type_ids"].bool().equal(batch["labels"] != IGNORE_INDEX)


def test_prefix_lm_token_types_mark_the_answer_for_paligemma_only(family_models, train_file: Path) -> None:
    from transformers import AutoProcessor

    examples = read_examples(train_file)[:2]
    paligemma = AutoProcessor.from_pretrained(family_models("paligemma"))
    batch = encode_batch(paligemma, examples)
    answer = batch["labels"] != IGNORE_INDEX
    fixed = prefix_lm_token_type_ids(paligemma, dict(batch), answer)
    assert (
        fixed["token_type_ids"].bool().equal(answer) and fixed["token_type_ids"].dtype == batch["token_type_ids"].dtype
    )
    gemma3 = AutoProcessor.from_pretrained(family_models("gemma3"))
    batch = encode_batch(gemma3, examples)
    image_tokens = batch["token_type_ids"].clone()  # Gemma 3: 1 marks image tokens, kept as they are
    kept = prefix_lm_token_type_ids(gemma3, dict(batch), batch["labels"] != IGNORE_INDEX)
    assert kept["token_type_ids"].equal(image_tokens) and image_tokens.any()


def _check_lora_targets(model) -> None:
    import re

    language = language_model_prefix(model)
    towers, projectors = vision_prefixes(model), projector_prefixes(model)
    assert towers and language not in towers

    def under(name: str, prefixes: list[str]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    def selected(targets) -> set[str]:
        names = linear_layers(model)
        if isinstance(targets, str):
            return {n for n in names if re.fullmatch(targets, n)}
        return set(targets)

    default = selected(lora_target_modules(model))
    lm = {n for n in linear_layers(model) if under(n, [language])}
    leaves = {n.rsplit(".", 1)[-1] for n in default}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= leaves
    assert default == lm  # every linear layer of the language model (no head, no router in these)
    assert not any(under(n, towers + projectors) for n in default)
    with_vision = selected(lora_target_modules(model, include_vision=True))
    tower = {n for n in linear_layers(model) if under(n, towers) and not under(n, projectors)}
    assert tower and with_vision == default | tower
    everything = selected(lora_target_modules(model, include_vision=True, include_projector=True))
    assert everything == default | tower | {n for n in linear_layers(model) if under(n, projectors)}


@pytest.mark.parametrize("name", family_params())
def test_lora_targets_are_the_language_model_attention_and_mlp(name: str, family_models) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(family_models(name))
    _check_lora_targets(model)
    targets = lora_target_modules(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert adapted and all(language_model_prefix(model) in n for n in adapted)


@pytest.mark.parametrize("name", TORCHVISION_FAMILIES)
def test_the_model_half_of_a_torchvision_family_builds_here(name: str, tmp_path: Path) -> None:
    """Without torchvision their processors cannot be built, but config, model, save, reload and LoRA targets can."""
    import torch
    from transformers import AutoModelForImageTextToText

    from support import tiny_families

    tokenizer = {
        "qwen2_vl": tiny_families._qwen_tokenizer,
        "qwen2_5_vl": tiny_families._qwen_tokenizer,
        "internvl": tiny_families._internvl_tokenizer,
        "smolvlm": tiny_families._smolvlm_tokenizer,
    }[name]()
    torch.manual_seed(0)
    getattr(tiny_families, f"_{name}_model")(tokenizer).save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(model).__name__ == FAMILIES[name].model_class
    _check_lora_targets(model)


def _hand_made_batch(name: str, tokenizer, answer: bool) -> dict:
    """What the processor would make, built by hand from the family's PIL image processor and the tokenizer: the
    chat rendered by its template with each image placeholder expanded to the image's token count."""
    from support import tiny_families as tf

    if name == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        size = {"height": tf.INTERNVL_IMAGE, "width": tf.INTERNVL_IMAGE}
        pixels = GotOcr2ImageProcessorPil(size=size, crop_to_patches=True, max_patches=4)(images(), return_tensors="pt")
        per_tile = (tf.INTERNVL_IMAGE // tf.INTERNVL_PATCH) ** 2 // 4
        counts = [per_tile * int(n) for n in pixels.pop("num_patches")]
        placeholder, expanded = "<IMG_CONTEXT>", lambda n: "<img>" + "<IMG_CONTEXT>" * n + "</img>"
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        processor = Qwen2VLImageProcessorPil(
            size=dict(tf.QWEN_PIXELS), patch_size=tf.QWEN_PATCH, merge_size=tf.QWEN_MERGE, temporal_patch_size=2
        )
        pixels = processor(images(), return_tensors="pt")
        counts = [int(thw.prod()) // tf.QWEN_MERGE**2 for thw in pixels["image_grid_thw"]]
        placeholder, expanded = "<|image_pad|>", lambda n: "<|image_pad|>" * n
    texts = []
    for count, reply in zip(counts, SAMPLE_TEXTS[10:12], strict=True):
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        chat += [{"role": "assistant", "content": [{"type": "text", "text": reply}]}] if answer else []
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=not answer)
        texts.append(text.replace(placeholder, expanded(count)))
    tokenizer.padding_side = "right" if answer else "left"
    batch = {**tokenizer(texts, return_tensors="pt", padding=True), **pixels}
    if name != "internvl":  # M-RoPE needs to know which tokens are image tokens
        batch["mm_token_type_ids"] = (batch["input_ids"] == tokenizer.convert_tokens_to_ids(placeholder)).long()
    if answer:
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "internvl"])
def test_the_model_half_of_a_torchvision_family_trains_and_generates_on_its_image_processor(name: str) -> None:
    """Without their processors: the PIL image processor's output and the model agree (patch, merge and tile sizes,
    M-RoPE sections), a training step's loss is finite and generation runs."""
    import torch

    from support import tiny_families as tf

    tokenizer = tf._internvl_tokenizer() if name == "internvl" else tf._qwen_tokenizer()
    torch.manual_seed(0)
    model = getattr(tf, f"_{name}_model")(tokenizer)
    loss = model(**_hand_made_batch(name, tokenizer, answer=True)).loss
    loss.backward()
    assert math.isfinite(float(loss))
    prompt = _hand_made_batch(name, tokenizer, answer=False)
    with torch.inference_mode():
        output = model.eval().generate(**prompt, max_new_tokens=3, do_sample=False)
    assert output.shape == (2, prompt["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("name", family_params())
def test_lora_and_full_sft_train_with_finite_losses_and_save_loadable_checkpoints(name: str, family_runs) -> None:
    import json

    runs = family_runs(name)
    for method, (result, logs) in runs.items():
        assert result.steps == 4 and result.train_examples == 12, method
        losses = [entry["loss"] for entry in logs if entry["event"] == "progress"]
        assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses), (method, losses)
        assert math.isfinite(result.first_loss) and math.isfinite(result.final_loss)
    lora, full = Path(runs["lora"][0].output_dir), Path(runs["full"][0].output_dir)
    assert (lora / "adapter_model.safetensors").exists() and not (lora / "model.safetensors").exists()
    assert (full / "model.safetensors").exists() and (full / "processor_config.json").exists()
    targets = json.loads((lora / "adapter_config.json").read_text())["target_modules"]
    assert "language_model" in str(targets) or "text_model" in str(targets)


def _test_items() -> pl.DataFrame:
    """Four test items: two `know` (keyword accuracy) and two `ling` (METEOR, chrF), Czech references."""
    czech = [text for text in SAMPLE_TEXTS if "ř" in text or "č" in text][:4]
    return pl.DataFrame(
        {"id": [f"{i:02d}" for i in range(4)], "source": ["know", "know", "ling", "ling"], "reference": czech}
    )


@pytest.mark.parametrize("name", family_params())
def test_trained_checkpoints_answer_the_test_items_and_are_scored(name: str, family_models, family_runs) -> None:
    runs = family_runs(name)
    base = str(family_models(name))
    models = {
        "base": VisionLanguageModel.from_pretrained(base),
        "previous": VisionLanguageModel.from_pretrained(base, adapter=runs["lora"][0].output_dir),  # LoRA: on base
        "finetuned": VisionLanguageModel.from_pretrained(runs["full"][0].output_dir),  # full: the folder alone
    }
    items = _test_items()
    test_images = [images()[i % 2] for i in range(items.height)]
    frames = []
    for role, vlm in models.items():
        outputs = vlm.generate(test_images, [PROMPT] * items.height, max_new_tokens=6, batch_size=4)
        assert len(outputs) == items.height and all(o.new_tokens >= 1 for o in outputs)
        frames.append(
            items.with_columns(
                pl.lit(role).alias("model"),
                pl.lit(vlm.version).alias("model_version"),
                pl.Series("output", [o.text for o in outputs], dtype=pl.String),
            )
        )
    assert "+" in models["previous"].version  # the adapter is part of the version
    scored, scores = score_samples(pl.concat(frames), REGISTRY["cs"], n_resamples=20)
    assert scored.height == 3 * items.height
    assert scores.height == 3 * len(METRICS)
    assert set(scores["model"]) == {"base", "previous", "finetuned"}
    assert scores.filter(pl.col("model") == "finetuned")["compared_to"].unique().to_list() == ["previous"]
    chrf = scores.filter(pl.col("metric") == "chrf")["value"].to_list()
    assert all(value is not None and 0 <= value <= 100 for value in chrf)
