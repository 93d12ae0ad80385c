"""The tiny offline models and the captioning / translation wrappers that load them like real checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import (
    BUILD_FILE,
    SAMPLE_TEXTS,
    TinyModels,
    build_hash,
    build_tiny_models,
    language_code_tokens,
)
from mella_assets.lib.vlm import (
    Generation,
    VisionLanguageModel,
    load_caption_prompt,
    prepare_image,
)
from mella_assets.ling.translation import Translator, split_sentences, transliterate_serbian_to_latin


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [Image.new("RGB", (40 + 10 * i, 30 + 6 * i), (30 * i, 100, 200 - 20 * i)) for i in range(8)]


def test_tiny_models_reload_through_the_auto_classes(tiny: TinyModels) -> None:
    from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoProcessor, AutoTokenizer

    processor = AutoProcessor.from_pretrained(tiny.captioner)
    captioner = AutoModelForImageTextToText.from_pretrained(tiny.captioner)
    tokenizer = AutoTokenizer.from_pretrained(tiny.translator)
    translator = AutoModelForSeq2SeqLM.from_pretrained(tiny.translator)
    assert type(captioner).__name__ == "LlavaForConditionalGeneration"
    assert type(translator).__name__ == "M2M100ForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert sum(p.numel() for p in captioner.parameters()) < 500_000
    for code in [*language_code_tokens(), "<image>"]:
        assert tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(code)) == code
    assert len(tokenizer.encode("ces_Latn", add_special_tokens=False)) == 1


def test_tokenizer_round_trips_text_in_every_script_exactly(tiny: TinyModels) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.translator)
    unseen = ["Ђурђевдан у Нишу, 2024.", "ฝนตกหนักที่เชียงใหม่", "무궁화 꽃이 피었습니다", "Tiếng Việt có dấu: ỗ ự ằ"]
    for text in [*SAMPLE_TEXTS, *unseen, "  two  spaces\nand a newline\t"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_second_build_with_same_texts_and_seed_is_a_no_op(tiny: TinyModels) -> None:
    root = tiny.captioner.parent
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}
    again = build_tiny_models(root, SAMPLE_TEXTS, seed=0)
    assert again == tiny
    assert json.loads((root / BUILD_FILE).read_text())["hash"] == build_hash(SAMPLE_TEXTS, 0)
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()} == before


def test_same_texts_and_seed_build_identical_weights_elsewhere(tiny: TinyModels, tmp_path: Path) -> None:
    other = build_tiny_models(tmp_path, SAMPLE_TEXTS, seed=0)
    for name in ("captioner/model.safetensors", "translator/model.safetensors", "captioner/tokenizer.json"):
        assert (tmp_path / name).read_bytes() == (tiny.captioner.parent / name).read_bytes()
    assert other.translator == tmp_path / "translator"


def test_changed_seed_rebuilds_with_other_weights(tmp_path: Path) -> None:
    texts = SAMPLE_TEXTS[:20]
    build_tiny_models(tmp_path, texts, seed=0)
    first = (tmp_path / "captioner/model.safetensors").read_bytes()
    build_tiny_models(tmp_path, texts, seed=1)
    assert (tmp_path / "captioner/model.safetensors").read_bytes() != first
    assert json.loads((tmp_path / BUILD_FILE).read_text())["seed"] == 1


def test_caption_prompt_v1_is_read_from_package_data() -> None:
    prompt = load_caption_prompt("caption-v1")
    assert prompt.version == "caption-v1"
    assert prompt.text == (
        "Describe the image in detail: the objects, the setting, any visible text, the people and what they are doing."
    )


def test_prepare_image_converts_to_rgb_and_caps_pixels() -> None:
    image = prepare_image(Image.new("L", (400, 100)), max_pixels=10_000)
    assert image.mode == "RGB"
    assert image.size == (200, 50)
    assert prepare_image(Image.new("RGB", (20, 10)), max_pixels=10_000).size == (20, 10)


def test_generation_is_deterministic_across_calls_and_batch_sizes(tiny: TinyModels, images: list[Image.Image]) -> None:
    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner))
    prompts = [load_caption_prompt().text] * 7 + ["Short?"]
    batched = vlm.generate(images, prompts, max_new_tokens=12, batch_size=4)
    assert vlm.generate(images, prompts, max_new_tokens=12, batch_size=4) == batched
    # Left padding plus the attention mask make a padded row decode like an unpadded one (fp32, greedy).
    assert vlm.generate(images, prompts, max_new_tokens=12, batch_size=1) == batched
    assert len(batched) == 8
    assert all(isinstance(g, Generation) and 0 < g.new_tokens <= 12 for g in batched)
    # 4 image tokens (32 px image, 16 px patches) + chat markup + the prompt
    assert batched[7].prompt_tokens < batched[0].prompt_tokens
    assert vlm.model_id == str(tiny.captioner)
    assert vlm.version.startswith("captioner@")


def test_generate_rejects_mismatched_images_and_prompts(tiny: TinyModels, images: list[Image.Image]) -> None:
    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner))
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        vlm.generate(images[:2], ["one"])


def test_translate_returns_one_string_per_input_in_order(tiny: TinyModels) -> None:
    translator = Translator.from_pretrained(str(tiny.translator))
    texts = ["A red tram crosses the bridge. Two children play.", "", "A woman reads.", "Snow!"]
    out = translator.translate(texts, "ces_Latn", batch_size=2)
    assert len(out) == 4
    assert out[1] == ""
    assert all(out[i] for i in (0, 2, 3))
    assert translator.translate(texts, "ces_Latn", batch_size=16) == out
    assert translator.translate([texts[2]], "ces_Latn") == [out[2]]


def test_translate_rejects_a_target_code_the_model_lacks(tiny: TinyModels) -> None:
    translator = Translator.from_pretrained(str(tiny.translator))
    with pytest.raises(ValueError, match="xxx_Latn"):
        translator.translate(["Hello."], "xxx_Latn")


def test_split_sentences_splits_after_final_punctuation_followed_by_space() -> None:
    assert split_sentences("Hi there. How are you?  Fine! 3.5 km...ok") == [
        "Hi there.",
        "How are you?",
        "Fine!",
        "3.5 km...ok",
    ]
    assert split_sentences("هل هذا سوق؟ نعم.") == ["هل هذا سوق؟", "نعم."]
    assert split_sentences("รถรางสีแดงข้ามสะพาน") == ["รถรางสีแดงข้ามสะพาน"]
    assert split_sentences("   ") == []


def test_serbian_cyrillic_transliterates_to_standard_latin() -> None:
    assert transliterate_serbian_to_latin("Љубав, њива, ђак, ћевап и џеп.") == "Ljubav, njiva, đak, ćevap i džep."
    assert transliterate_serbian_to_latin("Џеп, Њујорк, Ђорђе Ћосић") == "Džep, Njujork, Đorđe Ćosić"
    assert transliterate_serbian_to_latin("ЉУБАВ ПОЉ ЏЕП") == "LJUBAV POLJ DŽEP"
    assert transliterate_serbian_to_latin("Шчепан Жарић, Чачак") == "Ščepan Žarić, Čačak"
    assert transliterate_serbian_to_latin("Београд 2024, Beograd") == "Beograd 2024, Beograd"
