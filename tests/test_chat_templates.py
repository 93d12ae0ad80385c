"""Answer-only labels for any chat template: the released templates of the paper's backbones (Qwen2-VL, InternVL)
and most others have no ``{% generation %}`` markers, where transformers' assistant mask is all zeros and the
loss NaN. Templates of five styles, built here without markers, on the tiny VLM's real processor."""

import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import SAMPLE_TEXTS, TinyModels
from mella_assets.training.sft import (
    GENERATION_MARKER,
    IGNORE_INDEX,
    NoAnswerTokens,
    answer_spans,
    encode_batch,
    read_examples,
)
from support.chat_templates import TEMPLATES, content_loop, load_processor, with_template

PROMPT = "Describe the image."
ANSWERS = SAMPLE_TEXTS[6:14]


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
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: " + content_loop("<image>") + "{% endif %}"
        "{% endfor %}"
    )
    processor = load_processor(with_template(tiny, tmp_path / "silent", silent))
    examples = read_examples(train_file)[:2]
    with pytest.raises(NoAnswerTokens, match=r"example 0 of the batch \(prompt 'Describe the image\.'"):
        encode_batch(processor, examples)
