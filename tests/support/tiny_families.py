"""Tiny random-weight models of real image-text-to-text families, built offline for the family tests.

Each builder makes the family's real config class (tiny sizes), its real model class, its real processor class with
the family's real image processor (the PIL variant: the default ones need torchvision, which cannot be installed
beside the CPU torch here) and a byte-level BPE tokenizer trained here on a few sentences, carrying the family's
special tokens and a chat template shaped like the released checkpoint's, without ``{% generation %}`` markers
(released templates have none). :func:`build_family` saves model and processor with ``save_pretrained``; the tests
load them back only through ``AutoProcessor`` / ``AutoModelForImageTextToText``, as a real checkpoint is loaded.

Families whose processor cannot be built without torchvision (Qwen2-VL, Qwen2.5-VL, InternVL, SmolVLM: their
processors require a video processor, which needs torchvision) have builders too, marked ``requires=("torchvision",)``
so the tests skip them where torchvision does not import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mella_assets.demo.tiny_models import SAMPLE_TEXTS

VOCAB_SIZE = 800  # BPE merges over SAMPLE_TEXTS; the byte alphabet (256) and the special tokens come on top


# -- tokenizer ----------------------------------------------------------------------------------------------------


def train_tokenizer(
    special_tokens: Sequence[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    chat_template: str,
    named_tokens: dict[str, str] | None = None,
    extra_tokens: Sequence[str] = (),
    vocab_size: int = VOCAB_SIZE,
):
    """A byte-level BPE trained on :data:`SAMPLE_TEXTS` (every script of the project's languages round-trips),
    wrapped in ``PreTrainedTokenizerFast`` with the family's special tokens. ``named_tokens`` become tokenizer
    attributes (``tokenizer.image_token`` …) as the released tokenizers' ``extra_special_tokens`` do; ``extra_tokens``
    are added as plain added tokens (not stripped when decoding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    named = dict(named_tokens or {})
    special = list(dict.fromkeys([t for t in (pad, bos, eos, unk) if t] + list(special_tokens) + list(named.values())))
    backend = Tokenizer(models.BPE(unk_token=unk) if unk else models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(special),
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(SAMPLE_TEXTS), trainer=trainer)
    kwargs: dict[str, Any] = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    if unk:
        kwargs["unk_token"] = unk
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        extra_special_tokens=named or [t for t in special if t not in (pad, bos, eos, unk)],
        **kwargs,
    )
    if named:
        # The named ones are attributes; the rest of the family's special tokens must stay special too.
        rest = [t for t in special if t not in (pad, bos, eos, unk) and t not in named.values()]
        if rest:
            tokenizer.add_tokens(rest, special_tokens=True)
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    tokenizer.chat_template = chat_template
    return tokenizer


def _ids(tokenizer, eos: Sequence[str] = ()) -> dict[str, Any]:
    """pad / bos / eos ids for configs; ``eos`` adds end-of-turn tokens to the generation config's stop ids."""
    ids: dict[str, Any] = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,  # None where the family has no BOS (Qwen)
        "eos_token_id": tokenizer.eos_token_id,
    }
    if eos:
        ids["eos_token_id"] = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(eos))]
    return ids


def _generation_config(tokenizer, eos: Sequence[str] = ()):
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, max_new_tokens=32, **_ids(tokenizer, eos))


def _llama(tokenizer, **overrides):
    from transformers import LlamaConfig

    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
        **_ids(tokenizer),
    }
    return LlamaConfig(**{**settings, **overrides})


def _clip_vision(image_size: int, patch_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )


def _siglip_vision(image_size: int, patch_size: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


# -- LLaVA 1.5 (llava-hf/llava-1.5-7b-hf): CLIP + Llama -----------------------------------------------------------

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _build_llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_size, patch_size = 32, 16
    tokenizer = train_tokenizer(
        ["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", chat_template=LLAVA_TEMPLATE,
        named_tokens={"image_token": "<image>"},
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=_clip_vision(image_size, patch_size),
        text_config=_llama(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


# -- LLaVA-NeXT (llava-hf/llava-v1.6-mistral-7b-hf): CLIP + Mistral, any-resolution tiles ------------------------

# The released template ends an assistant turn with the literal text '<\\s> ' (a typo for '</s>'); this one ends it
# with the real end-of-sequence token so the tiny model can learn to stop.
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def _build_llava_next():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor, MistralConfig
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_size, patch_size = 32, 16
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    tokenizer = train_tokenizer(
        ["<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", chat_template=LLAVA_NEXT_TEMPLATE,
        named_tokens={"image_token": "<image>"},
    )  # fmt: skip
    text = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        sliding_window=None,
        **_ids(tokenizer),
    )
    config = LlavaNextConfig(
        vision_config=_clip_vision(image_size, patch_size),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=pinpoints,
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE,
    )
    return model, processor


# -- Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3): SigLIP-style tower + pixel shuffle + Llama ---------------------

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_GRID = 2  # tiles per side at most (size / max_image_size)


def _build_idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    image_size, patch_size, scale_factor = 32, 8, 2
    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = train_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *tiles],
        bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<|reserved_special_token_0|>",
        chat_template=IDEFICS3_TEMPLATE,
    )  # fmt: skip
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=_llama(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        **_ids(tokenizer),
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer, eos=["<end_of_utterance>"])
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": IDEFICS3_GRID * image_size}, max_image_size={"longest_edge": image_size}
        ),
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=IDEFICS3_TEMPLATE,
    )
    return model, processor


# -- Gemma 3 (google/gemma-3-4b-it): SigLIP + Gemma3 text, pooled image tokens -----------------------------------

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    '{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}'
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    '{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif -%}'
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    '{%- else -%}{{ raise_exception("Invalid content type") }}{%- endif -%}'
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)


def _build_gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image_size, patch_size, tokens_per_image = 32, 8, 4
    tokenizer = train_tokenizer(
        ["<start_of_turn>", "<end_of_turn>"],
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", chat_template=GEMMA3_TEMPLATE,
        named_tokens={
            "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
        },
    )  # fmt: skip
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=64,
        **_ids(tokenizer),
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=_siglip_vision(image_size, patch_size),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        **_ids(tokenizer),
    )
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer, eos=["<end_of_turn>"])
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=GEMMA3_TEMPLATE,
    )
    return model, processor


# -- Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision-Instruct): tiled ViT + cross-attention layers -------------

# The released template also handles tools and a system message; a chat with an image has no system turn.
MLLAMA_TEMPLATE = (
    "{{- bos_token }}"
    '{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}'
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text']|trim %}{%- endif %}"
    "{%- set messages = messages[1:] %}"
    '{%- else %}{%- set system_message = "" %}{%- endif %}'
    "{%- set image_ns = namespace(has_images=false) %}"
    "{%- for message in messages %}{%- if message['content'] is not string %}"
    "{%- for content in message['content'] %}{%- if content['type'] == 'image' %}"
    "{%- set image_ns.has_images = true %}{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}"
    '{%- if image_ns.has_images and not system_message == "" %}'
    '{{- raise_exception("Prompting with images is incompatible with system messages.") }}{%- endif %}'
    "{%- if not image_ns.has_images %}"
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}'
    '{{- "Today Date: " + date_string + "\\n\\n" }}'
    '{{- system_message }}{{- "<|eot_id|>" }}'
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _build_mllama():
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    image_size, patch_size, tiles = 32, 8, 2
    tokenizer = train_tokenizer(
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", chat_template=MLLAMA_TEMPLATE,
    )  # fmt: skip
    vision = MllamaVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        max_num_tiles=tiles,
        intermediate_layers_indices=[0],
        vision_output_dim=2 * 32,  # hidden_size * (1 + len(intermediate_layers_indices))
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
    )
    text = MllamaTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        cross_attention_layers=[1],
        **_ids(tokenizer),
    )
    config = MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<|image|>")
    )
    model = MllamaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(
            size={"height": image_size, "width": image_size}, max_image_tiles=tiles
        ),
        tokenizer=tokenizer,
        chat_template=MLLAMA_TEMPLATE,
    )
    return model, processor


# -- PaliGemma (google/paligemma2-3b-mix-224): SigLIP + Gemma2, prefix-LM ------------------------------------------

# PaliGemma ships no chat template: its processor turns "<image>" + prefix into image tokens, <bos>, the prefix and
# "\n", and the answer (the "suffix") follows. This template renders that layout from a chat.
PALIGEMMA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    + "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    + "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    + "{% elif message['role'] == 'assistant' %}{{ '\n' }}"
    + "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    + "{{ eos_token }}{% endif %}{% endfor %}"
)


def _build_paligemma():
    from transformers import Gemma2Config, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_size, patch_size = 32, 8
    tokenizer = train_tokenizer(
        ["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", chat_template=PALIGEMMA_TEMPLATE,
        named_tokens={"image_token": "<image>"},
    )  # fmt: skip
    text = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=64,
        **_ids(tokenizer),
    )
    config = PaliGemmaConfig(
        vision_config=_siglip_vision(image_size, patch_size),
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=64,
        hidden_size=64,
        vocab_size=len(tokenizer),
    )
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    processor = PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=PALIGEMMA_TEMPLATE
    )
    return model, processor


# -- Qwen2-VL / Qwen2.5-VL (Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct): native-resolution ViT + Qwen2 ---
# Their processors need a video processor, which needs torchvision: these build only where torchvision imports.

QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN_PATCH, QWEN_MERGE = 8, 2
QWEN_PIXELS = {"shortest_edge": 16 * 16, "longest_edge": 32 * 32}  # at most (32/8)^2 / 2^2 = 4 image tokens


def _qwen_tokenizer():
    return train_tokenizer(
        QWEN_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>", chat_template=QWEN2_VL_TEMPLATE
    )


def _qwen_text(tokenizer) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        # head_dim 16: the three M-RoPE sections (time, height, width) cover its 8 rotary frequencies
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        **_ids(tokenizer),
    }


def _qwen_token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _qwen2_vl_model(tokenizer):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,  # the merger's output: the text model's width
        "mlp_ratio": 2,
        "num_heads": 2,
        "patch_size": QWEN_PATCH,
        "spatial_merge_size": QWEN_MERGE,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision, **_qwen_token_ids(tokenizer))
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model


def _qwen2_5_vl_model(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,  # the merger's output: the text model's width
        "patch_size": QWEN_PATCH,
        "spatial_merge_size": QWEN_MERGE,
        "temporal_patch_size": 2,
        "window_size": 2 * QWEN_PATCH * QWEN_MERGE,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision, **_qwen_token_ids(tokenizer))
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model


def _qwen_processor(tokenizer, processor_class: str):
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    sizes = {"size": dict(QWEN_PIXELS), "patch_size": QWEN_PATCH, "merge_size": QWEN_MERGE, "temporal_patch_size": 2}
    return getattr(transformers, processor_class)(
        image_processor=Qwen2VLImageProcessorPil(**sizes),
        tokenizer=tokenizer,
        video_processor=transformers.Qwen2VLVideoProcessor(**sizes),  # needs torchvision
        chat_template=QWEN2_VL_TEMPLATE,
    )


def _build_qwen2_vl():
    tokenizer = _qwen_tokenizer()
    return _qwen2_vl_model(tokenizer), _qwen_processor(tokenizer, "Qwen2VLProcessor")


def _build_qwen2_5_vl():
    tokenizer = _qwen_tokenizer()
    return _qwen2_5_vl_model(tokenizer), _qwen_processor(tokenizer, "Qwen2_5_VLProcessor")


# -- InternVL 3 (OpenGVLab/InternVL3-1B-hf): InternViT + pixel shuffle + Qwen2 ------------------------------------

INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
INTERNVL_IMAGE, INTERNVL_PATCH = 32, 8


def _internvl_tokenizer():
    return train_tokenizer(
        ["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        chat_template=INTERNVL_TEMPLATE,
        named_tokens={
            "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )  # fmt: skip


def _internvl_model(tokenizer):
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    vision = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[INTERNVL_IMAGE, INTERNVL_IMAGE],
        patch_size=[INTERNVL_PATCH, INTERNVL_PATCH],
    )
    text = Qwen2Config(**{k: v for k, v in _qwen_text(tokenizer).items() if k != "rope_parameters"})
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=(INTERNVL_IMAGE // INTERNVL_PATCH) ** 2 // 4,  # downsample_ratio 0.5
        downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model


def _build_internvl():
    import transformers
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = _internvl_tokenizer()
    size = {"height": INTERNVL_IMAGE, "width": INTERNVL_IMAGE}
    processor = transformers.InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(size=size, crop_to_patches=True, min_patches=1, max_patches=4),
        tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(size=size),  # needs torchvision
        image_seq_length=(INTERNVL_IMAGE // INTERNVL_PATCH) ** 2 // 4,
        chat_template=INTERNVL_TEMPLATE,
    )
    return _internvl_model(tokenizer), processor


# -- SmolVLM (HuggingFaceTB/SmolVLM-256M-Instruct): Idefics3 layout, SmolLM2 text ----------------------------------

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_IMAGE, SMOLVLM_PATCH = 32, 8


def _smolvlm_tokenizer():
    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    return train_tokenizer(
        ["<fake_token_around_image>", "<image>", "<global-img>", *tiles],
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", chat_template=SMOLVLM_TEMPLATE,
    )  # fmt: skip


def _smolvlm_model(tokenizer):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

    vision = SmolVLMVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SMOLVLM_IMAGE,
        patch_size=SMOLVLM_PATCH,
    )
    config = SmolVLMConfig(
        vision_config=vision,
        text_config=_llama(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        **_ids(tokenizer),
    )
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    return model


def _build_smolvlm():
    import transformers
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    tokenizer = _smolvlm_tokenizer()
    processor = transformers.SmolVLMProcessor(
        image_processor=SmolVLMImageProcessorPil(
            size={"longest_edge": 2 * SMOLVLM_IMAGE}, max_image_size={"longest_edge": SMOLVLM_IMAGE}
        ),
        tokenizer=tokenizer,
        video_processor=transformers.SmolVLMVideoProcessor(),  # needs torchvision
        image_seq_len=(SMOLVLM_IMAGE // SMOLVLM_PATCH) ** 2 // 4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    return _smolvlm_model(tokenizer), processor


# -- Aya Vision (CohereLabs/aya-vision-8b): SigLIP + pixel shuffle + Cohere2 (Command R7B), 23 languages ----------

AYA_VISION_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' }}"
    "{% elif message['role'] == 'system' %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' }}"
    "{% else %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|END_RESPONSE|>' }}{% endif %}{{ '<|END_OF_TURN_TOKEN|>' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>' }}{% endif %}"
)


def _build_aya_vision():
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor, Cohere2Config
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    image_size, patch_size, downsample = 32, 8, 2
    turn = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"]
    image = ["<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>"]
    tokenizer = train_tokenizer(
        [*turn, "<|SYSTEM_TOKEN|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>", *image],
        bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>", chat_template=AYA_VISION_TEMPLATE,
        extra_tokens=["TILE", "TILE_GLOBAL"],
    )  # fmt: skip
    text = Cohere2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        sliding_window=64,
        **_ids(tokenizer),
    )
    config = AyaVisionConfig(
        vision_config=_siglip_vision(image_size, patch_size),
        text_config=text,
        downsample_factor=downsample,
        image_token_index=tokenizer.convert_tokens_to_ids("<|IMG_PATCH|>"),
    )
    model = AyaVisionForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    processor = AyaVisionProcessor(
        image_processor=GotOcr2ImageProcessorPil(
            size={"height": image_size, "width": image_size}, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        img_size=image_size,
        downsample_factor=downsample,
        chat_template=AYA_VISION_TEMPLATE,
    )
    return model, processor


# -- registry -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyFamily:
    """A family's builder and what it needs to build (modules that must import)."""

    name: str
    model_class: str
    build: Callable[[], tuple[Any, Any]]
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """Required modules that do not import here (torchvision for the video-processor families)."""
        return [module for module in self.requires if not _importable(module)]


def _importable(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # torchvision built for another torch fails with RuntimeError or ImportError
        return False
    return True


FAMILIES: dict[str, TinyFamily] = {
    family.name: family
    for family in (
        TinyFamily("llava", "LlavaForConditionalGeneration", _build_llava),
        TinyFamily("llava_next", "LlavaNextForConditionalGeneration", _build_llava_next),
        TinyFamily("idefics3", "Idefics3ForConditionalGeneration", _build_idefics3),
        TinyFamily("gemma3", "Gemma3ForConditionalGeneration", _build_gemma3),
        TinyFamily("mllama", "MllamaForConditionalGeneration", _build_mllama),
        TinyFamily("aya_vision", "AyaVisionForConditionalGeneration", _build_aya_vision),
        TinyFamily("paligemma", "PaliGemmaForConditionalGeneration", _build_paligemma),
        TinyFamily("qwen2_vl", "Qwen2VLForConditionalGeneration", _build_qwen2_vl, ("torchvision",)),
        TinyFamily("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", _build_qwen2_5_vl, ("torchvision",)),
        TinyFamily("internvl", "InternVLForConditionalGeneration", _build_internvl, ("torchvision",)),
        TinyFamily("smolvlm", "SmolVLMForConditionalGeneration", _build_smolvlm, ("torchvision", "num2words")),
    )
}


def build_family(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny ``name`` model and save model + processor to ``folder`` (loadable with the Auto classes)."""
    import torch

    folder = Path(folder)
    torch.manual_seed(seed)
    model, processor = FAMILIES[name].build()
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
