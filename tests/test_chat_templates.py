"""Answer-only labels for any chat template: the released templates of the paper's backbones (Qwen2-VL, InternVL)
and most others have no ``{% generation %}`` markers, where transformers' assistant mask is all zeros and the
loss NaN. Templates of five styles, built here without markers, on the tiny VLM's real processor."""

import math
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import SAMPLE_TEXTS, TinyModels
from mella_assets.training.sft import (
    GENERATION_MARKER,
    IGNORE_INDEX,
    NoAnswerTokens,
    SFTConfig,
    answer_spans,
    encode_batch,
    read_examples,
    train_sft,
)

PROMPT = "Describe the image."
ANSWERS = SAMPLE_TEXTS[6:14]


def _content(image: str) -> str:
    """The Jinja loop over a message's content items: ``image`` for an image item, the text for a text item."""
    return (
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}"
    )


# style → (template without generation markers, what ends an assistant turn)
TEMPLATES = {
    "llava": (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: " + _content("<image>\n") + " "
        "{% else %}ASSISTANT: " + _content("") + "</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        "</s>",
    ),
    "chatml_qwen": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + _content("<|vision_start|><image><|vision_end|>")
        + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "<|im_end|>",
    ),
    "llama3": (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        + _content("<image>") + "<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        "<|eot_id|>",
    ),
    "gemma": (
        "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        + _content("<image>") + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}",
        "<end_of_turn>",
    ),
    "idefics": (
        "<|begin_of_text|>{% for m in messages %}{{ m['role'] | capitalize }}"
        "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}" + _content("<image>")
        + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}",
        "<end_of_utterance>",
    ),
}  # fmt: skip


def with_template(tiny: TinyModels, folder: Path, template: str) -> Path:
    """A copy of the tiny VLM whose processor and tokenizer carry ``template`` (saved and loaded like a release)."""
    from transformers import AutoProcessor

    shutil.copytree(tiny.captioner, folder)
    processor = AutoProcessor.from_pretrained(folder)
    processor.chat_template = template
    processor.tokenizer.chat_template = template
    processor.save_pretrained(folder)
    return folder


def load_processor(folder: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


@pytest.mark.parametrize("style", sorted(TEMPLATES))
def test_labels_are_exactly_the_answer_and_its_end_of_turn_for_a_template_without_markers(
    style, tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    template, end_of_turn = TEMPLATES[style]
    assert GENERATION_MARKER not in template
    processor = load_processor(with_template(tiny, tmp_path / style, template))
    assert GENERATION_MARKER not in processor.chat_template
    examples = read_examples(train_file)[:3]
    batch = encode_batch(processor, examples)
    for row, example in zip(batch["labels"], examples, strict=True):
        labelled = row[row != IGNORE_INDEX].tolist()
        assert labelled, style
        assert processor.tokenizer.decode(labelled).strip() == example["answer"] + end_of_turn
    # Padding and the prompt are never labelled.
    assert not (batch["labels"] != IGNORE_INDEX)[batch["attention_mask"] == 0].any()


def test_each_assistant_turn_of_a_multi_turn_chat_gets_its_own_span(tiny: TinyModels, tmp_path: Path) -> None:
    template, end_of_turn = TEMPLATES["chatml_qwen"]
    processor = load_processor(with_template(tiny, tmp_path / "chatml", template))
    image = Image.new("RGB", (40, 40), (10, 120, 200))
    chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[0]}]},
        {"role": "user", "content": [{"type": "text", "text": "Ещё раз, короче."}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[1]}]},
    ]
    full = processor.apply_chat_template([chat], tokenize=True, return_dict=True)["input_ids"][0]
    full = full.tolist() if hasattr(full, "tolist") else list(full)
    spans = answer_spans(processor, chat, full)
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]
    decoded = [processor.tokenizer.decode(full[start:end]).strip() for start, end in spans]
    assert decoded == [ANSWERS[0] + end_of_turn, ANSWERS[1] + end_of_turn]


def test_an_example_without_answer_tokens_is_an_error_that_names_it(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    # A broken template that never renders the assistant turn: before, this trained on nothing with a NaN loss.
    silent = (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: " + _content("<image>") + "{% endif %}{% endfor %}"
    )
    processor = load_processor(with_template(tiny, tmp_path / "silent", silent))
    examples = read_examples(train_file)[:2]
    with pytest.raises(NoAnswerTokens, match=r"example 0 of the batch \(prompt 'Describe the image\.'"):
        encode_batch(processor, examples)


@pytest.mark.parametrize("style", ["chatml_qwen", "llama3"])
def test_training_on_a_template_without_markers_has_a_finite_falling_loss(
    style, tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    model = with_template(tiny, tmp_path / style, TEMPLATES[style][0])
    logs: list[dict] = []
    config = SFTConfig(
        base_model=str(model),
        train_file=str(train_file),
        output_dir=str(tmp_path / "out"),
        method="full",
        max_steps=12,
        log_every=4,
    )
    result = train_sft(config, log=logs.append)
    losses = [entry["loss"] for entry in logs if entry.get("event") == "progress"]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert math.isfinite(result.first_loss) and result.final_loss < result.first_loss
